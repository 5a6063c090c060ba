#!/usr/bin/env bash
# Build both wheels, install them (not editable) into a fresh virtual environment, and check what a user of the
# napari hub gets: `alignflow --help` runs from the engine's wheel without importing torch, and napari's plugin
# manager (npe2) finds the plugin's manifest with every contribution importable.
# Usage: tools/check_wheels.sh PYTHON VENV_DIR   (the Makefile's check-wheels target)
set -euo pipefail
python=${1:?python}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "${2:?venv folder}"
venv=$(cd "$2" && pwd)
dist="$venv/dist"
rm -rf "$dist" && mkdir -p "$dist"
"$python" -m pip wheel --quiet --no-deps -w "$dist" "$root/backend" "$root" 2>&1 | grep -v "^WARNING: Location" || true
ls "$dist"/alignflow-*.whl "$dist"/napari_alignflow-*.whl >/dev/null
wheel_python="$venv/bin/python"
stamp="$venv/.dependencies"
wanted=$(cat "$root/backend/pyproject.toml" "$root/pyproject.toml" | sha256sum | cut -c1-16)
if [ ! -x "$wheel_python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  rm -rf "$venv/bin" "$venv/lib" "$venv/include" "$venv/pyvenv.cfg"
  "$python" -m venv "$venv"
  "$wheel_python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$wheel_python" -m pip install --quiet torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true  # the CPU wheel
  # First install: with dependencies, as `pip install napari-alignflow[all]` would resolve them.
  "$wheel_python" -m pip install --quiet "$dist"/alignflow-*.whl "$(ls "$dist"/napari_alignflow-*.whl)[all]" 2>&1 | grep -v "^WARNING: Location" || true
  echo "$wanted" > "$stamp"
fi
# Every run: this commit's wheels replace the installed ones.
"$wheel_python" -m pip install --quiet --no-deps --force-reinstall "$dist"/*.whl 2>&1 | grep -v "^WARNING: Location" || true
"$wheel_python" -m pip check
cd "$venv"  # not the checkout: the packages must come from the wheels
"$wheel_python" - <<'PY'
import subprocess, sys
from pathlib import Path
import alignflow, napari_alignflow
for module in (alignflow, napari_alignflow):
    assert "site-packages" in module.__file__, f"{module.__name__} imported from {module.__file__}, not the wheel"
help_run = subprocess.run([str(Path(sys.executable).parent / "alignflow"), "--help"], capture_output=True, text=True)
assert help_run.returncode == 0 and "generate" in help_run.stdout, help_run.stderr
probe = "import sys, alignflow.cli; alignflow.cli.build_parser(); print('torch' in sys.modules)"
assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
from npe2 import PluginManager
manager = PluginManager.instance()
manager.discover()
manifest = manager.get_manifest("napari-alignflow")
for command in manifest.contributions.commands:
    module, _, name = command.python_name.partition(":")
    __import__(module)
    assert hasattr(sys.modules[module], name.split(".")[0]), command.python_name
print(f"wheels OK: alignflow {alignflow.__version__} and napari-alignflow ({len(manifest.contributions.commands)} "
      "contributions, every one importable) installed from wheels; alignflow --help imports no torch")
PY
