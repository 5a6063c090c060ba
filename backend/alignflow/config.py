"""Config files and the dict/YAML/JSON round trip every engine config dataclass shares."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from alignflow.errors import InputError, check_known_keys


class DictConfig:
    """``to_dict`` / ``from_dict`` for a config dataclass: unknown keys are rejected by name, and configs that
    set ``validate_on_load`` are validated as they are read (the others validate where they are used)."""

    config_name: ClassVar[str] = "config"  # how errors name the mapping by default
    validate_on_load: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | None = None) -> Any:
        check_known_keys(values, {f.name for f in fields(cls)}, where or cls.config_name)  # type: ignore[arg-type]
        config = cls(**values)
        if cls.validate_on_load:
            config.validate()  # type: ignore[attr-defined]
        return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of options; keys use the same names as the CLI flags (with underscores)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "a YAML or JSON config file")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(path, "valid YAML or JSON", str(error).splitlines()[0]) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(path, "a mapping of option names to values", type(values).__name__)
    return {key.replace("-", "_"): value for key, value in values.items()}
