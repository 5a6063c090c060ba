"""Screenshots of the plugin's panels in use on real data, for docs/plugin.md and the README (run headless).

    OMP_NUM_THREADS=1 ALIGNFLOW_WEIGHTS_DIR=../shared/weights xvfb-run -a -s "-screen 0 1600x1000x24" \
        .venv/bin/python docs/make_screenshots.py --data ../shared/data

Models are trained briefly here (minutes on a CPU), so generated samples are rough: the pictures show the panels
working, not the quality of a full run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage.io import imsave

IMAGES = Path(__file__).resolve().parent / "images"


def wait(app, condition, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the panel did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def copy_pairs(real: Path, root: Path, count: int, start: int = 0) -> Path:
    names = sorted(p.name for p in (real / "images").iterdir())[start : start + count]
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(real / sub / name, root / sub / name)
    return root


def save(viewer, name: str) -> None:
    imsave(IMAGES / f"plugin_{name}.png", np.asarray(viewer.window.screenshot(canvas_only=False, flash=False)), check_contrast=False)
    print("wrote", IMAGES / f"plugin_{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the shared data folder (Kvasir-SEG, CVC-ClinicDB)")
    args = parser.parse_args()
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="alignflow-shots-"))

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_alignflow.readers.dataset_folder import dataset_layers
    from napari_alignflow.widgets.masks import MasksWidget
    from napari_alignflow.widgets.references import ReferencesWidget
    from napari_alignflow.widgets.training import TrainingWidget

    source = copy_pairs(data / "Kvasir-SEG", work / "kvasir", 48)
    target = copy_pairs(data / "CVC-ClinicDB", work / "clinicdb", 24, start=100)

    # References: the target scans opened as a dataset folder, the advisor's suggestion selected.
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    for data_, kwargs, kind in dataset_layers(target, "ClinicDB"):
        getattr(viewer, f"add_{kind}")(data_, **kwargs)
    references = ReferencesWidget(viewer)
    viewer.window.add_dock_widget(references, name="AlignFlow references")
    references.k_spin.setValue(6)
    viewer.layers.selection = {viewer.layers["ClinicDB images"]}
    worker = references.suggest()
    wait(app, lambda: references.advice is not None and not worker.is_running)
    app.processEvents()
    save(viewer, "references")
    reference_folder = work / "references"
    references.save_references(reference_folder)
    viewer.close()

    # Training: a short stage-1 run of a small generator on Kvasir, its loss curve and preview.
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    training = TrainingWidget(viewer)
    viewer.window.add_dock_widget(training, name="AlignFlow training")
    options = work / "options.json"
    options.write_text(json.dumps({"generator": {"resolution": 64}, "log_every": 2, "preview_every": 40,
                                   "checkpoint_every": 1000}))
    training.source.setText(str(source))
    training.out.setText(str(work / "run"))
    training.config_file.setText(str(options))
    training.steps.setValue(120)
    training.batch_size.setValue(4)
    training.device.setCurrentText("cpu")
    training.start()
    wait(app, lambda: len(training.plot.points["loss_denoising"][0]) >= 45 and "AlignFlow training preview" in viewer.layers)
    app.processEvents()
    save(viewer, "training")
    wait(app, lambda: training.last_status is not None and training.last_status.finished)
    viewer.close()

    # Synthetic masks: a mask generator trained briefly on Kvasir masks, post-processing sliders moved.
    from alignflow.masks.training import MaskTrainConfig, train_mask_generator

    generator = train_mask_generator(MaskTrainConfig(source=str(source), out=str(work / "maskgen"), steps=300,
                                                     batch_size=8, lr=1e-3, device="cpu", preview_every=1000,
                                                     generator={"resolution": 64, "num_layers": 2}))
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    masks = MasksWidget(viewer)
    viewer.window.add_dock_widget(masks, name="AlignFlow synthetic masks")
    masks.generator.setText(str(generator))
    masks.count.setValue(8)
    masks.steps.setValue(20)
    masks.device.setCurrentText("cpu")
    worker = masks.generate()
    wait(app, lambda: masks.raw is not None and not worker.is_running)
    masks.sigma.slider.setValue(15)
    masks.min_area.slider.setValue(40)
    wait(app, lambda: masks.postprocess_runs >= 2)
    viewer.grid.enabled = True
    viewer.reset_view()
    app.processEvents()
    save(viewer, "masks")
    viewer.close()


if __name__ == "__main__":
    main()
