"""The server's boundary and faults (issue 18), through the real app on loopback: one data-root rule for every
string of a job config at any depth (a test walks the job schema, so a new path field cannot skip it), mask values
checked at upload, encrypted zips answered 400, and what a killed server leaves removed on its next start."""

from __future__ import annotations

import io
import signal
import threading
import typing
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from serverkit import TOKEN, dataset_zip, free_port, serve_subprocess, wait_for

from alignflow.augment.pipeline import AugmentConfig
from alignflow.config import SECTION, _section_class
from alignflow.data import read_mask
from alignflow.generator.config import GenerateConfig, TrainConfig
from alignflow.masks.synthesis import MaskSynthesisConfig
from alignflow.masks.training import MaskTrainConfig
from alignflow.runners.base import JOB_KINDS
from alignflow.segmentation.config import SegmentConfig, SegmenterTrainConfig
from alignflow.server.app import remove_leftovers

# The config class of every job kind: the schema a job's config follows (the same classes the CLI reads).
JOB_CONFIGS = {"train": TrainConfig, "align": TrainConfig, "train-masks": MaskTrainConfig, "masks": MaskSynthesisConfig,
               "generate": GenerateConfig, "augment": AugmentConfig, "train-segmenter": SegmenterTrainConfig,
               "segment": SegmentConfig}


def _admits_text(hint: Any) -> bool:
    if hint is str:
        return True
    return any(_admits_text(argument) for argument in typing.get_args(hint))


def text_fields(config_class: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field (nested sections included) that can hold a string, as a key path."""
    hints = typing.get_type_hints(config_class)
    found = []
    for field in fields(config_class):
        path = (*prefix, field.name)
        if SECTION in field.metadata:
            found += text_fields(_section_class(field.metadata[SECTION]), path)
        elif _admits_text(hints[field.name]):
            found.append(path)
    return found


def nested(path: tuple[str, ...], value: Any) -> dict:
    config: Any = value
    for key in reversed(path):
        config = {key: config}
    return config


def test_the_job_schema_is_complete():
    assert set(JOB_CONFIGS) == set(JOB_KINDS)  # a new job kind needs its schema here


def test_every_text_field_of_every_job_is_held_to_the_data_root(make_server, tmp_path):
    server = make_server()
    outside = tmp_path / "outside"
    outside.mkdir()
    checked = 0
    for kind, config_class in JOB_CONFIGS.items():
        for path in text_fields(config_class):
            if path == ("out",):
                continue  # the server sets out itself
            for value in (str(outside / "victim"), "../../outside/victim", ["../../outside/victim"], "~/victim"):
                answer = server.post("/jobs", json={"kind": kind, "config": nested(path, value)})
                assert answer.status_code == 400, (kind, path, value, answer.text)
                assert answer.json()["where"] == "config." + ".".join(path), (kind, path, answer.json())
                checked += 1
    assert checked > 200 and server.get("/jobs").json() == []


def test_export_name_and_nested_train_paths_cannot_leave_the_data_root(make_server, source, tmp_path):
    server = make_server()
    victim = tmp_path / "outside" / "victim_folder"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep")
    upload = server.post("/uploads?kind=dataset", data=dataset_zip(source)).json()["upload_id"]
    base = {"source": f"upload:{upload}", "references": f"upload:{upload}/images"}
    for extra, where in (({"export_name": "../../../../outside/victim_folder"}, "config.export_name"),
                         ({"train": {"mask_segmenter": str(tmp_path / "outside" / "file"), "w_mask": 1}}, "config.train.mask_segmenter")):
        answer = server.post("/jobs", json={"kind": "augment", "config": {**base, **extra}})
        assert answer.status_code == 400 and answer.json()["where"] == where, answer.text
    assert server.get("/jobs").json() == [] and (victim / "precious.txt").read_text() == "keep"
    # Inside the data root a hub id and a plain word stay what they are.
    resolved = server.app.state.scheduler.resolve_paths({**base, "feature_encoder": "dino:facebook/dinov2-small", "device": "cpu",
                                                         "train": {"reward": "mmd"}})
    assert resolved["feature_encoder"] == "dino:facebook/dinov2-small" and resolved["train"] == {"reward": "mmd"}
    assert Path(resolved["source"]).is_relative_to(server.settings.data_root.resolve())


def test_an_upload_with_a_stray_mask_value_is_refused_naming_the_file(make_server, source):
    server = make_server()
    victim = sorted((source / "masks").iterdir())[1]
    Image.fromarray(np.where(read_mask(victim) > 0, 128, 0).astype(np.uint8)).save(victim)
    answer = server.post("/uploads?kind=dataset&name=set.zip", data=dataset_zip(source))
    assert answer.status_code == 400 and victim.name in answer.json()["detail"] and "{0, 128}" in answer.json()["detail"]
    assert server.get("/uploads").json() == []


def _encrypted(data: bytes) -> bytes:
    """A zip whose members carry the encryption flag (bit 0 of the general purpose flags), as a password-protected
    archive made by any zip tool does; zipfile then refuses to read a member without a password."""
    patched = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := patched.find(signature, start)) != -1:
            patched[start + offset] |= 0x01
            start += 4
    return bytes(patched)


def test_an_encrypted_or_unreadable_zip_is_a_400_with_the_reason(make_server, source):
    server = make_server()
    archive = _encrypted(dataset_zip(source))
    with zipfile.ZipFile(io.BytesIO(archive)) as check:
        assert check.infolist()[0].flag_bits & 0x1
    answer = server.post("/uploads?kind=dataset&name=secret.zip", data=archive)
    assert answer.status_code == 400 and "encrypted" in answer.json()["detail"] and "secret.zip" in answer.json()["detail"]
    broken = bytearray(dataset_zip(source))
    broken[60:90] = bytes(30)  # inside the first member's compressed data
    answer = server.post("/uploads?kind=dataset&name=broken.zip", data=bytes(broken))
    assert answer.status_code == 400 and "broken.zip" in answer.json()["detail"], answer.text
    assert server.get("/uploads").json() == []


def test_half_unpacked_uploads_are_removed_on_start(tmp_path):
    uploads, scratch = tmp_path / "uploads", tmp_path / "scratch"
    (uploads / "done" / "data").mkdir(parents=True)
    (uploads / "done" / "upload.json").write_text("{}")
    (uploads / "killed" / "data").mkdir(parents=True)  # unpacked, but the server died before it answered
    scratch.mkdir()
    (scratch / "unrelated.zip").write_bytes(b"not ours")
    assert remove_leftovers(uploads, scratch) == [uploads / "killed"]
    assert (uploads / "done").is_dir() and (scratch / "unrelated.zip").exists()


@pytest.mark.slow
def test_an_upload_cut_by_kill_9_leaves_nothing_after_the_restart(tmp_path, source):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    data_root, port = tmp_path / "server", free_port()
    server = serve_subprocess(data_root, token_file, port)
    release = threading.Event()

    def slow_body():
        yield b"PK\x03\x04" + bytes(1 << 16)
        release.wait(60)  # the rest never comes: the server is killed while it stages the upload
        yield bytes(16)

    def upload():
        try:
            requests.post(f"http://127.0.0.1:{port}/uploads?kind=dataset", data=slow_body(), timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"})
        except requests.RequestException:
            pass  # the server died under it

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    try:
        staged = wait_for(lambda: list((data_root / "scratch").glob(".upload.*.tmp")), 30, "a staged upload")
        server.send_signal(signal.SIGKILL)
        server.wait()
        release.set()
        assert staged[0].exists()  # what kill -9 leaves
        server = serve_subprocess(data_root, token_file, port)
        assert not staged[0].exists() and list((data_root / "scratch").iterdir()) == []
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert f"removed {staged[0]}" in output, output
