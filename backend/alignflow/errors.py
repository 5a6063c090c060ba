"""User-facing errors: each names the file or parameter at fault and what was expected."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input (a file, folder or parameter). The CLI prints it on one line and exits with code 2."""

    def __init__(self, where: str | Path, expected: str, got: str | None = None):
        self.where = str(where)
        self.expected = expected
        self.got = got
        message = f"{self.where}: expected {expected}"
        if got is not None:
            message += f", got {got}"
        super().__init__(message)


def check_known_keys(values: dict, known: set[str], where: str) -> None:
    """Reject unknown option names (typos in a config file) with the names that are allowed."""
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(where, f"only known keys ({', '.join(sorted(known))})", f"unknown {unknown}")
