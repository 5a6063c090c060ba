"""The dict/YAML/JSON round trip every engine config dataclass shares."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

from .errors import check_known_keys


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
