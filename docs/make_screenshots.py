"""Screenshots of the AlignFlow dock in use on real data, for docs/plugin.md and the README (run headless).

    OMP_NUM_THREADS=1 ALIGNFLOW_WEIGHTS_DIR=../shared/weights xvfb-run -a -s "-screen 0 1366x768x24" \\
        .venv/bin/python docs/make_screenshots.py --data ../shared/data [--segmenter runs/seg_bench/run] \\
        [--generator runs/exp/align_r10s0/generator] [--only guide,training,...]

It drives the dock as a clinician would, on a 1366 x 768 window (a laptop screen): the Guide with Kvasir-SEG as the
source and CVC-ClinicDB frames as the target scans, the advisor's references, stage 1 then stage 2 from the Guide,
previews, curation, evaluation, export, then the Masks and Segment tabs and training on a job server.

Models are trained briefly here (minutes on a CPU), so generated samples are rough: the pictures show the panels
working, not the quality of a full run. ``--segmenter`` uses a MedFlowSeg trained before (e.g. by
benchmarks/segmentation_kvasir.py) instead of a brief one, ``--generator`` an image generator trained before (e.g. the
aligned Kvasir -> CVC-ClinicDB generator of benchmarks/polyp_shift.py) for the Generate, Curate and Evaluate pictures.
The remote-training picture runs a real job server (the app of ``alignflow serve``) on loopback.
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
SCREEN = (1366, 768)
SHOTS = ("guide", "references", "training", "generation", "curation", "evaluation", "export", "masks", "segmentation",
         "training_remote")


def wait(app, condition, timeout: float = 1800.0) -> None:
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


class Shooter:
    def __init__(self, only: set[str]):
        self.only = only

    def __call__(self, app, viewer, name: str) -> None:
        if name not in self.only:
            return
        settle(app, 0.5)
        path = IMAGES / f"plugin_{name}.png"
        imsave(path, np.asarray(viewer.window.screenshot(canvas_only=False, flash=False)), check_contrast=False)
        print("wrote", path, flush=True)


def new_viewer():
    import napari

    from napari_alignflow.widgets.dock import AlignFlowDock

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SCREEN)
    dock = AlignFlowDock(viewer)
    viewer.window.add_dock_widget(dock, name="AlignFlow")
    return viewer, dock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the shared data folder (Kvasir-SEG, CVC-ClinicDB)")
    parser.add_argument("--segmenter", help="a trained MedFlowSeg run folder (default: train one briefly here)")
    parser.add_argument("--generator", help="a trained image generator for the Generate, Curate and Evaluate pictures "
                                            "(default: the one the Guide trains and aligns here)")
    parser.add_argument("--only", default=",".join(SHOTS), help="comma-separated pictures to write (default: all)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="alignflow-shots-"))
    shoot = Shooter(only)

    from napari import settings
    from napari.settings import NapariSettings
    from qtpy.QtWidgets import QApplication

    # napari as on a first start (default settings, nothing remembered, nothing saved): what a new user sees, and the
    # reader preferences the dock sets stay out of this machine's napari settings.
    NapariSettings.save = lambda self, *args, **kwargs: None
    settings._SETTINGS = NapariSettings(config_path=None)

    source = copy_pairs(data / "Kvasir-SEG", work / "kvasir", 48)
    target = copy_pairs(data / "CVC-ClinicDB", work / "clinicdb", 24, start=100)
    labelled = copy_pairs(data / "CVC-ClinicDB", work / "clinicdb_labelled", 12, start=300)
    (work / "target_scans").mkdir()
    for file in sorted((target / "images").iterdir()):  # target scans as a clinician has them: images, no masks
        shutil.copy(file, work / "target_scans" / file.name)

    viewer, dock = new_viewer()
    app = QApplication.instance()
    if only & {"guide", "references", "training", "generation", "curation", "evaluation", "export"}:
        guided_flow(app, viewer, dock, shoot, work, source, labelled, args.generator)
    viewer.close()
    if "masks" in only:
        masks(app, shoot, work, source)
    if "segmentation" in only:
        segmentation(app, shoot, data, work, source, args.segmenter)
    if "training_remote" in only:
        remote_training(app, shoot, work, source)


def guided_flow(app, viewer, dock, shoot, work: Path, source: Path, labelled: Path, generator: str | None) -> None:
    """The Guide from an empty napari to an export, with a picture of each tab on the way."""
    from napari_alignflow.session import REJECTED, session_for

    guide, panels, session = dock.guide, dock.panels, session_for(viewer)
    options = work / "options.json"
    options.write_text(json.dumps({"generator": {"resolution": 64}, "checkpoint_every": 1000}))
    training = panels["Train"]
    training.config_file.setText(str(options))
    training.batch_size.setValue(4)
    training.device.setCurrentText("cpu")

    guide.work.setText(str(work / "job"))
    guide.source.setText(str(source))
    guide.open_source()
    viewer.open(str(work / "target_scans"), plugin=None)  # a dropped folder of scans: no reader dialog
    guide.target.reset_choices()
    guide.target.setCurrentText("target_scans")
    guide.use_target()
    guide.k.setValue(6)
    guide.steps1.setValue(150)
    guide.steps2.setValue(30)
    for suffix in ("images", "masks"):  # the target scans in view
        viewer.layers[f"{source.name} {suffix}"].visible = False

    worker = guide.suggest_references()
    wait(app, lambda: worker.handled and session.state.references is not None)
    shoot(app, viewer, "references")

    guide.train_and_align()
    wait(app, lambda: len(training.plot.points["loss_denoising"][0]) >= 40 and training.last_preview is not None)
    training.show_preview_layer()  # "Show preview in viewer"
    shoot(app, viewer, "training")
    wait(app, lambda: session.state.stage2 is not None or (training.start_button.isEnabled() and training.follow is None
                                                              and training.kind == "align"))
    if session.state.stage2 is None:
        raise RuntimeError(f"stage 2 did not finish: {training.status_label.text()}")

    generation = panels["Generate"]
    generation.steps.setValue(20)
    generation.device.setCurrentText("cpu")
    guide.preview.setValue(8)
    if generator:
        generation.generator.setText(generator)
        generation.masks.setCurrentText(f"{source.name} masks")
        worker = generation.generate(first=8)
    else:
        worker = guide.generate_previews()
    wait(app, lambda: worker.handled)
    references = panels["References"]
    references.show_as_layer()
    generation.reset_choices()
    generation.references.setCurrentText("AlignFlow references")
    generation.contour.setChecked(True)
    generation.opacity.setValue(90)
    generation.grid.setChecked(True)
    viewer.reset_view()
    shoot(app, viewer, "generation")
    generation.grid.setChecked(False)

    curation = panels["Curate"]
    dock.show_tab("Curate")
    for layer in list(viewer.layers):
        layer.visible = False
    session.decide(session.state.pairs[1:3], REJECTED)
    curation.table.selectRow(3)
    curation.table.setFocus()
    shoot(app, viewer, "curation")

    evaluation = panels["Evaluate"]
    evaluation.size.setValue(64)
    evaluation.device.setCurrentText("cpu")
    evaluation.labelled.setText(str(labelled))
    dock.show_tab("Evaluate")
    worker = evaluation.evaluate()
    wait(app, lambda: worker.handled)
    worker = evaluation.evaluate_downstream()
    wait(app, lambda: worker.handled)
    evaluation.table.sortItems(2)
    evaluation.table.selectRow(0)
    shoot(app, viewer, "evaluation")

    export = panels["Export"]
    export.use_target.setChecked(True)  # the labelled target pairs, each set an equal part of a quarter of the cases
    export.target.setText(str(labelled))
    export.use_share.setChecked(True)
    export.out.setText(str(work / "export" / "Dataset501_Polyps"))
    export.label_names.setText("background, polyp")
    dock.show_tab("Export")
    worker = export.export()
    wait(app, lambda: worker.handled)
    settle(app)
    shoot(app, viewer, "export")
    dock.show_tab("Guide")  # every step done
    shoot(app, viewer, "guide")


def masks(app, shoot, work: Path, source: Path) -> None:
    """A mask generator trained briefly on Kvasir masks, post-processing sliders moved."""
    from alignflow.masks.training import MaskTrainConfig, train_mask_generator

    generator = train_mask_generator(MaskTrainConfig(source=str(source), out=str(work / "maskgen"), steps=300,
                                                     batch_size=8, lr=1e-3, device="cpu", preview_every=1000,
                                                     generator={"resolution": 64, "num_layers": 2}))
    viewer, dock = new_viewer()
    panel = dock.panels["Masks"]
    dock.show_tab("Masks")
    panel.generator.setText(str(generator))
    panel.count.setValue(8)
    panel.steps.setValue(20)
    panel.device.setCurrentText("cpu")
    worker = panel.generate()
    wait(app, lambda: panel.raw is not None and worker.handled)
    panel.sigma.slider.setValue(15)
    panel.min_area.slider.setValue(40)
    wait(app, lambda: panel.postprocess_runs >= 2)
    viewer.dims.set_current_step(0, 3)  # a post-processed mask over its raw grey mask
    settle(app)
    viewer.reset_view()
    shoot(app, viewer, "masks")
    viewer.close()


def segmentation(app, shoot, data: Path, work: Path, source: Path, segmenter: str | None) -> None:
    """MedFlowSeg on CVC-ClinicDB frames (another hospital than its Kvasir training data): fused labels, the entropy
    with its colorbar, the images ranked by uncertainty."""
    if segmenter is None:
        from alignflow.segmentation.config import SegmenterTrainConfig
        from alignflow.segmentation.trainer import train_segmenter

        segmenter = str(train_segmenter(SegmenterTrainConfig(source=str(source), out=str(work / "segmenter"), steps=300,
                                                              batch_size=8, lr=3e-4, resolution=64, device="cpu",
                                                              preview_every=1000, checkpoint_every=1000)))
    viewer, dock = new_viewer()
    panel = dock.panels["Segment"]
    dock.show_tab("Segment")
    frames = copy_pairs(data / "CVC-ClinicDB", work / "clinicdb_frames", 4, start=400)
    viewer.open(str(frames), plugin=None)
    viewer.layers[f"{frames.name} masks"].visible = False
    panel.reset_choices()
    panel.image.setCurrentText(f"{frames.name} images")
    panel.segmenter.setText(segmenter)
    panel.steps.setValue(10)
    panel.samples.setValue(8)
    panel.device.setCurrentText("cpu")
    worker = panel.run()
    wait(app, lambda: worker.handled)
    viewer.layers["AlignFlow segmentation"].contour = 2
    panel.ranking.selectRow(0)
    shoot(app, viewer, "segmentation")
    viewer.close()


def remote_training(app, shoot, work: Path, source: Path) -> None:
    """The Train tab running on a job server (loopback here; a GPU machine in use)."""
    import secrets
    import socket
    import threading

    import uvicorn

    from alignflow.server.app import ServerSettings, create_app
    from napari_alignflow.runners import REMOTE

    options = work / "remote_options.json"
    options.write_text(json.dumps({"generator": {"resolution": 64}, "checkpoint_every": 1000}))
    token = secrets.token_urlsafe(24)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app_ = create_app(ServerSettings(data_root=work / "server", token=token))
    server = uvicorn.Server(uvicorn.Config(app_, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait(app, lambda: server.started, timeout=30)
    try:
        viewer, dock = new_viewer()
        training = dock.panels["Train"]
        dock.show_tab("Train")
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
        wait(app, lambda: len(training.plot.points["loss_denoising"][0]) >= 25 and training.last_preview is not None)
        training.show_preview_layer()
        shoot(app, viewer, "training_remote")
        wait(app, training.start_button.isEnabled)
        viewer.close()
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main()
