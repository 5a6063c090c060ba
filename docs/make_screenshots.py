"""Screenshots of the plugin's panels in use on real data, for docs/plugin.md and the README (run headless).

    OMP_NUM_THREADS=1 ALIGNFLOW_WEIGHTS_DIR=../shared/weights xvfb-run -a -s "-screen 0 1600x1000x24" \
        .venv/bin/python docs/make_screenshots.py --data ../shared/data [--segmenter runs/seg_bench/run] \
        [--generator runs/exp/align_r10s0/generator]

Models are trained briefly here (minutes on a CPU), so generated samples are rough: the pictures show the panels
working, not the quality of a full run. ``--segmenter`` uses a MedFlowSeg trained before (e.g. by
benchmarks/segmentation_kvasir.py) instead of a brief one, ``--generator`` an image generator trained before (e.g. the
aligned Kvasir -> CVC-ClinicDB generator of benchmarks/polyp_shift.py). The remote-training picture runs a real job server
(the app of ``alignflow serve``) on loopback.
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


def settle(app, seconds: float = 1.5) -> None:
    """Let the window draw what just changed (notifications appear after a short animation)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
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
    parser.add_argument("--segmenter", help="a trained MedFlowSeg run folder (default: train one briefly here)")
    parser.add_argument("--generator", help="a trained image generator for the Generate panel, e.g. an aligned one from "
                                            "benchmarks/polyp_shift.py (default: the one the Training panel trains here)")
    args = parser.parse_args()
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="alignflow-shots-"))

    from qtpy.QtWidgets import QApplication

    from napari_alignflow.widgets.masks import MasksWidget
    from napari_alignflow.widgets.references import ReferencesWidget
    from napari_alignflow.widgets.training import TrainingWidget

    source = copy_pairs(data / "Kvasir-SEG", work / "kvasir", 48)
    target = copy_pairs(data / "CVC-ClinicDB", work / "clinicdb", 24, start=100)

    # References: the target scans opened as a dataset folder, the advisor's suggestion selected.
    viewer, references = new_viewer(ReferencesWidget, "AlignFlow references")
    app = QApplication.instance()
    add_dataset(viewer, target, "ClinicDB")
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
    viewer, training = new_viewer(TrainingWidget, "AlignFlow training")
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
    viewer, masks = new_viewer(MasksWidget, "AlignFlow synthetic masks")
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

    generation_and_export(app, data, work, source, Path(args.generator) if args.generator else work / "run", reference_folder)
    segmentation(app, data, work, source, args.segmenter)
    remote_training(app, work, source, options)


def new_viewer(widget_class, name: str):
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=name)
    return viewer, widget


def add_dataset(viewer, folder: Path, name: str) -> None:
    from napari_alignflow.readers.dataset_folder import dataset_layers

    for data_, kwargs, kind in dataset_layers(folder, name):
        getattr(viewer, f"add_{kind}")(data_, **kwargs)


def generation_and_export(app, data: Path, work: Path, source: Path, generator: Path, references: Path) -> None:
    """Images generated for real Kvasir masks by the generator trained above, in the grid beside the references;
    then the Export panel writes them with the real pairs as an nnU-Net dataset."""
    from napari_alignflow.widgets.export import ExportWidget
    from napari_alignflow.widgets.generation import GenerationWidget
    from napari_alignflow.widgets.references import ReferencesWidget

    viewer, generation = new_viewer(GenerationWidget, "AlignFlow generate images")
    masks = copy_pairs(data / "Kvasir-SEG", work / "kvasir_masks", 6, start=200)
    add_dataset(viewer, masks, "Kvasir")
    picked = ReferencesWidget(viewer)  # not docked: only its "Show as layer" is used
    picked.add_files(sorted(references.iterdir()))
    picked.show_as_layer()
    generation.reset_choices()
    generation.generator.setText(str(generator))
    generation.masks.setCurrentText("Kvasir masks")
    generation.steps.setValue(20)
    generation.device.setCurrentText("cpu")
    worker = generation.generate()
    wait(app, lambda: worker.handled)
    generation.contour.setChecked(True)
    generation.opacity.setValue(90)
    generation.grid.setChecked(True)
    app.processEvents()
    save(viewer, "generation")

    viewer.window.remove_dock_widget(generation)  # room for the canvas beside the export panel
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export, name="AlignFlow export")
    export.reset_choices()
    export.use_real.setChecked(True)
    export.real.setText(str(source))
    export.out.setText(str(work / "export" / "Dataset501_Polyps"))
    export.label_names.setText("background, polyp")
    worker = export.export()
    wait(app, lambda: worker.handled)
    viewer.reset_view()
    settle(app)  # the notification of the export shows
    save(viewer, "export")
    viewer.close()


def segmentation(app, data: Path, work: Path, source: Path, segmenter: str | None) -> None:
    """MedFlowSeg on CVC-ClinicDB frames (another hospital than its Kvasir training data): fused labels and the
    entropy of the ensemble with its colorbar."""
    from napari_alignflow.widgets.segmentation import SegmentationWidget

    if segmenter is None:
        from alignflow.segmentation.config import SegmenterTrainConfig
        from alignflow.segmentation.trainer import train_segmenter

        segmenter = str(train_segmenter(SegmenterTrainConfig(source=str(source), out=str(work / "segmenter"), steps=300,
                                                              batch_size=8, lr=3e-4, resolution=64, device="cpu",
                                                              preview_every=1000, checkpoint_every=1000)))
    viewer, panel = new_viewer(SegmentationWidget, "AlignFlow segmentation")
    frames = copy_pairs(data / "CVC-ClinicDB", work / "clinicdb_frames", 4, start=400)
    add_dataset(viewer, frames, "ClinicDB")
    viewer.layers["ClinicDB masks"].visible = False
    panel.reset_choices()
    panel.image.setCurrentText("ClinicDB images")
    panel.segmenter.setText(segmenter)
    panel.steps.setValue(10)
    panel.samples.setValue(8)
    panel.device.setCurrentText("cpu")
    worker = panel.run()
    wait(app, lambda: worker.handled)
    viewer.layers["AlignFlow segmentation"].contour = 2
    app.processEvents()
    save(viewer, "segmentation")
    viewer.close()


def remote_training(app, work: Path, source: Path, options: Path) -> None:
    """The Training panel running on a job server (loopback here; a GPU machine in use)."""
    import secrets
    import socket
    import threading

    import uvicorn

    from alignflow.server.app import ServerSettings, create_app
    from napari_alignflow.runners import REMOTE
    from napari_alignflow.widgets.training import TrainingWidget

    token = secrets.token_urlsafe(24)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app_ = create_app(ServerSettings(data_root=work / "server", token=token))
    server = uvicorn.Server(uvicorn.Config(app_, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait(app, lambda: server.started, timeout=30)
    try:
        viewer, training = new_viewer(TrainingWidget, "AlignFlow training")
        training.run_on.setCurrentText(REMOTE)
        training.server_url.setText(f"http://127.0.0.1:{port}")
        training.server_token.setText(token)
        training.source.setText(str(source))
        training.out.setText(str(work / "remote_run"))
        training.config_file.setText(str(options))
        training.steps.setValue(60)
        training.batch_size.setValue(4)
        training.device.setCurrentText("cpu")
        training.start()
        wait(app, lambda: len(training.plot.points["loss_denoising"][0]) >= 25 and "AlignFlow training preview" in viewer.layers)
        app.processEvents()
        save(viewer, "training_remote")
        wait(app, training.start_button.isEnabled)
        viewer.close()
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main()
