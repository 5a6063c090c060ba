"""Config files and the dict/YAML/JSON round trip every engine config dataclass shares.

``DictConfig.from_dict`` checks a mapping against the dataclass once, generically, before anything runs: unknown keys
are rejected by name, and every value against its field's type hint (``int``, ``float``, ``bool``, ``str``, ``X |
None``, ``list[X]``, ``dict[K, V]``, nested config sections). A wrong value is one line naming the key, the expected
type and the value. Text from config files is parsed where it is unambiguous: booleans from "true"/"false" (so
``overwrite: "false"`` is False, not ``bool("false")``), numbers from numeric text (YAML reads ``1e-4`` as a string).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import types
import typing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from alignflow.errors import InputError, check_known_keys

# Only the two words (any case): YAML already reads a bare yes/no/on/off as a boolean, and a quoted "yes" may be a typo.
TRUE_WORDS = ("true",)
FALSE_WORDS = ("false",)
SECTION = "section"  # field metadata: a dict field whose keys are the fields of another DictConfig ("module:Class")


class DictConfig:
    """``to_dict`` / ``from_dict`` for a config dataclass: unknown keys and wrong types are rejected by name, and
    configs that set ``validate_on_load`` are validated as they are read (the others validate where they are used)."""

    config_name: ClassVar[str] = "config"  # how errors name the mapping by default
    validate_on_load: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def checked_values(cls, values: dict[str, Any], where: str | None = None, prefix: str = "") -> dict[str, Any]:
        """``values`` with every value checked against (and parsed to) its field's type; unknown keys refused.

        ``prefix`` names a nested section in errors (``train.`` for ``train: {w_mask: ...}``).
        """
        if not isinstance(values, dict):
            raise InputError(prefix.rstrip(".") or where or cls.config_name, "a mapping of option names to values",
                             type(values).__name__)
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        check_known_keys(values, set(known), (prefix.rstrip(".") or where or cls.config_name))
        hints = _type_hints(cls)
        checked = {}
        for key, value in values.items():
            section = known[key].metadata.get(SECTION)
            if section is not None and isinstance(value, dict):
                checked[key] = _section_class(section).checked_values(value, where, prefix=f"{prefix}{key}.")
            else:
                checked[key] = check_value(value, hints[key], f"{prefix}{key}")
        return checked

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | None = None) -> Any:
        config = cls(**cls.checked_values(values, where))
        if cls.validate_on_load:
            config.validate()  # type: ignore[attr-defined]
        return config


def section(config_class: str) -> dict[str, Any]:
    """Field metadata of a dict field that holds options of another config class, named ``"module:Class"`` so that
    reading a light config does not import a heavy model module until such a section is given."""
    return {SECTION: config_class}


def _section_class(reference: str | type) -> type[DictConfig]:
    if isinstance(reference, str):
        module, _, name = reference.partition(":")
        return getattr(importlib.import_module(module), name)
    return reference


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def describe_type(annotation: Any) -> str:
    """The words an error uses for a type hint: ``int | None`` -> "an integer (or null)"."""
    if annotation is Any:
        return "any value"
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [describe_type(a) for a in arguments if a is not type(None)]
        text = " or ".join(options)
        return text + " (or null)" if type(None) in arguments else text
    if origin in (list, tuple):
        return f"a list of {_plural(describe_type(arguments[0]))}" if arguments else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a text value"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(text: str) -> str:
    return text.removeprefix("an ").removeprefix("a ") + "s" if text.startswith(("a ", "an ")) else text


class _Mismatch(Exception):
    """A value does not fit one member of a union (internal: the union tries the next one)."""


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """``value`` parsed to ``annotation``, or an InputError naming ``where``, the expected type and the value."""
    try:
        return _convert(value, annotation, where)
    except _Mismatch:
        raise InputError(where, describe_type(annotation), _show(value)) from None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(value: Any, annotation: Any, where: str) -> Any:
    if annotation is Any or annotation is object:
        return value
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        for member in (a for a in arguments if a is not type(None)):
            try:
                return _convert(value, member, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if annotation is bool:
        return _to_bool(value)
    if annotation is int:
        return _to_int(value)
    if annotation is float:
        return _to_float(value)
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise _Mismatch
    if annotation is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Mismatch
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = arguments[0] if arguments else Any
        # An element of the wrong type is named by its index: "channels[2]: expected an integer, got 'x'".
        return [check_value(element, item, f"{where}[{index}]") for index, element in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        key_type, item = arguments if arguments else (Any, Any)
        return {check_value(key, key_type, f"{where} key"): check_value(element, item, f"{where}.{key}")
                for key, element in value.items()}
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise _Mismatch


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise _Mismatch


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch  # True is an int to Python, never a count to a user
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Mismatch from None
    else:
        raise _Mismatch
    if not math.isfinite(number):  # no option of the engine means anything by inf or nan
        raise _Mismatch
    return number


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
    return {str(key).replace("-", "_"): value for key, value in values.items()}
