"""Checkpoints: safetensors tensors + JSON metadata, written atomically, loaded without unpickling anything.

A resumable training checkpoint holds the model, the AdamW state and the RNG state. The optimizer's state dict is
flattened into named tensors (safetensors) plus its JSON-safe ``param_groups``, so resuming never needs pickle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from alignflow.atomic import atomic_directory, atomic_open, atomic_write_json
from alignflow.errors import InputError

MODEL_FILE = "model.safetensors"


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str | Path, expected: str,
                           skip: Callable[[str], bool] | None = None) -> None:
    """Load ``state`` into ``module``, or raise an InputError naming ``where`` (the file or folder) and ``expected``
    (what the weights should be), with the counts and first names of missing, unexpected and mis-shaped tensors.

    ``skip(key)`` marks the module's tensors a saved file leaves out on purpose (SD3's frozen pretrained transformer).
    """
    own = module.state_dict()
    missing = sorted(key for key in set(own) - set(state) if not (skip and skip(key)))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(key for key in set(own) & set(state) if own[key].shape != state[key].shape)
    if missing or unexpected or misshaped:
        raise InputError(where, expected, f"{len(missing)} missing, {len(unexpected)} unexpected and {len(misshaped)} "
                                          f"mis-shaped tensors (first: {(missing + unexpected + misshaped)[:3]})")
    module.load_state_dict(state, strict=skip is None)
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
GENERATOR_CONFIG_FILE = "generator.json"
LATEST_FILE = "latest.json"


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A safetensors file, written beside its final name and renamed into place."""
    with atomic_open(Path(path)) as handle:
        handle.write(save({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise InputError(path, "a safetensors file")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise InputError(path, "a readable safetensors file", type(error).__name__ + f": {error}") from None


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": param_groups}


def save_training_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator_config: dict[str, Any],
    extra: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``checkpoints_dir/step_NNNNNN`` atomically, then point ``latest.json`` at it; prune old ones."""
    target = Path(checkpoints_dir) / f"step_{step:07d}"
    with atomic_directory(target) as tmp:
        save_tensors(model.saved_state_dict(), tmp / MODEL_FILE)
        optimizer_tensors, param_groups = optimizer_to_tensors(optimizer)
        optimizer_tensors["rng.torch"] = torch.get_rng_state()
        save_tensors(optimizer_tensors, tmp / OPTIMIZER_FILE)
        atomic_write_json(tmp / GENERATOR_CONFIG_FILE, generator_config)
        atomic_write_json(tmp / STATE_FILE, {"step": step, "param_groups": param_groups, **extra})
    atomic_write_json(Path(checkpoints_dir) / LATEST_FILE, {"path": target.name, "step": step})
    for old in sorted(Path(checkpoints_dir).glob("step_*"))[:-keep]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    pointer = Path(checkpoints_dir) / LATEST_FILE
    if not pointer.exists():
        return None
    target = Path(checkpoints_dir) / json.loads(pointer.read_text())["path"]
    return target if target.is_dir() else None


def load_training_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model, optimizer and RNG state in place; return the JSON state (step, ...)."""
    model.load_saved_state_dict(load_tensors(path / MODEL_FILE), str(path / MODEL_FILE))
    state = json.loads((path / STATE_FILE).read_text())
    tensors = load_tensors(path / OPTIMIZER_FILE)
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(optimizer_from_tensors(tensors, state["param_groups"]))
    return state


def save_model_folder(
    folder: Path, model: torch.nn.Module, config: dict[str, Any], info: dict[str, Any], config_file: str = GENERATOR_CONFIG_FILE
) -> Path:
    """An exported model (weights + config, with its provenance under ``_info``), written atomically."""
    with atomic_directory(Path(folder)) as tmp:
        save_tensors(model.saved_state_dict(), tmp / MODEL_FILE)
        atomic_write_json(tmp / config_file, {**config, "_info": info})
    return Path(folder)


def read_model_folder(
    folder: Path, *, config_file: str = GENERATOR_CONFIG_FILE, subfolder: str = "generator", expected: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any], Path]:
    """(config, weights, info, model folder) of an exported model folder, or of a run folder's ``subfolder``."""
    folder = Path(folder)
    if (folder / subfolder / config_file).exists():
        folder = folder / subfolder
    config_path = folder / config_file
    if not config_path.is_file():
        raise InputError(folder, expected or f"a trained model folder (with {config_file} and {MODEL_FILE}) or a run folder holding one")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(config_path, "valid JSON", str(error)) from None
    if not isinstance(config, dict):
        raise InputError(config_path, "a JSON object of model settings", type(config).__name__)
    info = config.pop("_info", {})
    return config, load_tensors(folder / MODEL_FILE), info, folder


def save_generator(folder: Path, model: torch.nn.Module, generator_config: dict[str, Any], info: dict[str, Any]) -> Path:
    """The exported generator (what ``align`` and ``generate`` load)."""
    return save_model_folder(folder, model, generator_config, info)


def read_generator_folder(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(generator config, weights, info) of a generator folder, or of a run folder's ``generator/``."""
    config, weights, info, _ = read_model_folder(
        folder, expected=f"a trained generator folder (with {GENERATOR_CONFIG_FILE} and {MODEL_FILE}) or a run folder holding one")
    return config, weights, info
