"""Every environment variable the engine reads, in one place (folders are ``~``-expanded).

| variable | what it sets | default |
|---|---|---|
| ``ALIGNFLOW_WEIGHTS_DIR`` | a local folder holding the registered weight files (offline machines, tests) | download with pooch |
| ``ALIGNFLOW_CACHE_DIR`` | the cache: downloaded weights, the phantom, feature caches, the plugin's generated pairs | the platform cache |
| ``ALIGNFLOW_SERVER_TOKEN`` | the job server's bearer token when no ``--token-file`` is given | none |
| ``ALIGNFLOW_SERVER_URL`` | the server ``alignflow remote`` talks to | ``http://127.0.0.1:8765`` |
| ``ALIGNFLOW_SLURM_JOBS`` | the SLURM job folders on the shared filesystem | ``./alignflow-slurm`` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

WEIGHTS_DIR = "ALIGNFLOW_WEIGHTS_DIR"
CACHE_DIR = "ALIGNFLOW_CACHE_DIR"
SERVER_TOKEN = "ALIGNFLOW_SERVER_TOKEN"
SERVER_URL = "ALIGNFLOW_SERVER_URL"
SLURM_JOBS = "ALIGNFLOW_SLURM_JOBS"


def env_text(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value with surrounding blanks removed; None when unset or blank."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def env_folder(name: str) -> Path | None:
    """A folder named by the variable, ``~`` expanded; None when unset or blank."""
    value = env_text(name)
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """Per-user cache folder: ``$ALIGNFLOW_CACHE_DIR`` if set, else the platform cache (via pooch)."""
    override = env_folder(CACHE_DIR)
    if override is not None:
        return override
    import pooch  # imported lazily: only needed when no override is set

    return Path(pooch.os_cache("alignflow"))
