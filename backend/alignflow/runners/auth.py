"""The server's bearer token: read from a file or an environment variable, compared in constant time."""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from alignflow import environment
from alignflow.environment import env_text
from alignflow.errors import InputError

TOKEN_ENV = environment.SERVER_TOKEN
MIN_TOKEN_CHARS = 16
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > TOKEN_FILE && chmod 600 TOKEN_FILE"


def load_token(token_file: str | Path | None = None, environ: dict[str, str] | None = None) -> str:
    """The token of ``token_file`` (first line), else of ``$ALIGNFLOW_SERVER_TOKEN``; refuses short or missing ones."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise InputError(path, f"a token file (make one with: {MAKE_TOKEN})", got="no such file")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            # Like ssh with a private key: a token others can read is not a secret.
            raise InputError(path, "a token file only its owner can read (chmod 600)", got=oct(path.stat().st_mode & 0o777))
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        token, where = (lines[0].strip() if lines else ""), str(path)
    else:
        token, where = env_text(TOKEN_ENV, environ) or "", TOKEN_ENV
        if not token:
            raise InputError("--token-file", f"a token file or the {TOKEN_ENV} environment variable", got="neither")
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(where, f"a token of at least {MIN_TOKEN_CHARS} characters", got=f"{len(token)}")
    return token


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
