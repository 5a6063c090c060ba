"""The engine's layout rule (docs/architecture.md): an area imports only from areas on lower floors, never sideways
or up; and the command line's parser imports neither torch nor MONAI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import alignflow

ENGINE = Path(alignflow.__file__).parent

# Floors from the ground up; the same table as docs/architecture.md. A module of the engine is in the area named by
# its first part below alignflow (``alignflow.generator.pairs`` -> generator; ``alignflow.errors`` -> errors).
FLOORS: list[tuple[str, ...]] = [
    ("errors", "atomic", "environment", "progress"),
    ("config", "device", "weights", "plotting"),
    ("cli_helpers", "data", "rewards", "flow_matching"),
    ("models", "runs"),
    ("fidelity", "export", "segmentation", "masks", "advisor", "runners"),
    ("generator", "metrics", "server"),
    ("downstream", "augment"),
    ("cli",),
]
FLOOR = {area: level for level, areas in enumerate(FLOORS) for area in areas}


def area_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "alignflow"


def engine_imports() -> list[tuple[str, str, str]]:
    """(importing file, importing area, imported module) for every import of the engine, lazy ones included."""
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        module = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alignflow":
                targets = [f"alignflow.{n.name}" for n in node.names] if node.module == "alignflow" else [node.module]
            elif isinstance(node, ast.Import):
                targets = [n.name for n in node.names if n.name.split(".")[0] == "alignflow"]
            else:
                continue
            found += [(str(path.relative_to(ENGINE)), area_of(module), target) for target in targets]
    return found


def test_every_area_has_a_floor():
    areas = {path.stem if path.is_file() else path.name for path in ENGINE.iterdir()
             if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()}
    assert areas == set(FLOOR), f"areas without a floor: {areas - set(FLOOR)}; floors without an area: {set(FLOOR) - areas}"


def test_no_area_imports_from_its_own_floor_or_above():
    wrong = []
    for path, area, target in engine_imports():
        other = area_of(target)
        if target in ("alignflow.__version__",) or other == area:
            continue
        if FLOOR[other] >= FLOOR[area]:
            wrong.append(f"{path} ({area}, floor {FLOOR[area]}) imports {target} ({other}, floor {FLOOR[other]})")
    assert not wrong, "\n".join(wrong)


def test_the_parser_imports_neither_torch_nor_monai():
    probe = ("import sys, alignflow.cli; alignflow.cli.build_parser(); "
             "print(sorted(m for m in ('torch', 'monai', 'numpy', 'diffusers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
