"""The job server's API on loopback: authentication, uploads (limits, unsafe archives, dataset checks), config paths."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from serverkit import TOKEN, dataset_zip, zip_bytes

from alignflow.errors import InputError
from alignflow.runners.auth import TOKEN_ENV, load_token


def test_every_endpoint_but_the_docs_needs_the_token(make_server):
    server = make_server()
    for path in ("/server", "/jobs", "/uploads", "/jobs/x", "/jobs/x/events", "/jobs/x/artifacts"):
        for token in (None, "wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x"):
            response = server.get(path, token=token)
            assert response.status_code == 401, (path, token, response.status_code)
            assert response.headers["www-authenticate"] == "Bearer"
    assert server.post("/jobs", token=None, json={"kind": "train", "config": {}}).status_code == 401
    assert server.post("/uploads?kind=dataset", token="nope", data=b"x").status_code == 401
    assert server.get("/server").status_code == 200
    assert server.get("/docs", token=None).status_code == 200
    schema = server.get("/openapi.json", token=None).json()
    assert {"/jobs", "/uploads", "/jobs/{job_id}/events", "/jobs/{job_id}/cancel", "/jobs/{job_id}/artifacts"} <= set(schema["paths"])


def test_a_dataset_upload_is_validated_and_listed(make_server, source):
    server = make_server()
    answer = server.post("/uploads?kind=dataset&name=kvasir.zip", data=dataset_zip(source, prefix="kvasir4/"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["pairs"] == 4
    images = server.post("/uploads?kind=images", data=dataset_zip(source / "images"))
    assert images.status_code == 201 and images.json()["images"] == 4
    assert [u["upload_id"] for u in server.get("/uploads").json()] == sorted([answer.json()["upload_id"], images.json()["upload_id"]])


def test_bad_archives_are_refused_with_the_reason(make_server, source):
    server = make_server(max_upload_bytes=200_000, max_extracted_bytes=400_000)
    small = {"images/a.png": (source / "images").iterdir().__next__().read_bytes()}

    corrupt = server.post("/uploads?kind=dataset&name=broken.zip", data=b"PK\x03\x04 this is not a zip")
    assert corrupt.status_code == 400 and "broken.zip" in corrupt.json()["detail"] and "zip" in corrupt.json()["expected"]

    oversize = server.post("/uploads?kind=dataset", data=os.urandom(300_000))
    assert oversize.status_code == 413

    bomb = server.post("/uploads?kind=images", data=zip_bytes({"images/zeros.png": bytes(500_000)}))
    assert bomb.status_code == 413 and "unpacked" in bomb.json()["expected"]

    for evil in ("../escape.png", "/etc/escape.png", "images/../../escape.png"):
        answer = server.post("/uploads?kind=images", data=zip_bytes({evil: b"x", **small}))
        assert answer.status_code == 400 and "'..'" in answer.json()["expected"], evil
    assert not (server.settings.data_root / "escape.png").exists() and not (server.settings.data_root.parent / "escape.png").exists()

    link = zipfile.ZipInfo("images/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = zip_bytes(small)
    import io

    buffer = io.BytesIO(archive)
    with zipfile.ZipFile(buffer, "a") as zipped:
        zipped.writestr(link, "/etc/passwd")
    answer = server.post("/uploads?kind=images", data=buffer.getvalue())
    assert answer.status_code == 400 and "symbolic links" in answer.json()["expected"]

    unpaired = server.post("/uploads?kind=dataset&name=set.zip", data=zip_bytes({**small, "masks/b.png": small["images/a.png"]}))
    assert unpaired.status_code == 400
    assert "set.zip" in unpaired.json()["detail"] and "a.png" in unpaired.json()["got"]

    assert server.get("/uploads").json() == []  # nothing refused is kept
    assert not any((server.settings.data_root / "scratch").iterdir())


def test_config_paths_must_stay_inside_the_data_root(make_server, source, tmp_path):
    server = make_server()
    upload = server.post("/uploads?kind=dataset", data=dataset_zip(source)).json()["upload_id"]
    for where, value in (("source", "/etc"), ("source", "../data"), ("source", f"upload:{upload}/../../../.."),
                         ("source", "upload:nope"), ("init", "job:nope/generator"), ("references", ["uploads", "/tmp"])):
        answer = server.post("/jobs", json={"kind": "train-masks", "config": {where: value, "steps": 1}})
        assert answer.status_code == 400, (where, value, answer.text)
        assert answer.json()["where"] == f"config.{where}"
    # Model folders nested in other settings are held to the same rule; a hub id stays a hub id.
    for config, where in (({"feature_encoder": "dino:/etc"}, "config.feature_encoder"),
                          ({"feature_encoder": "dino:../../models/dino"}, "config.feature_encoder"),
                          ({"generator": {"kind": "sd3", "pretrained": "/root/sd3"}}, "config.generator.pretrained"),
                          ({"generator": {"kind": "sd3", "controlnet_pretrained": "~/cn"}}, "config.generator.controlnet_pretrained")):
        answer = server.post("/jobs", json={"kind": "align", "config": {**config, "steps": 1}})
        assert answer.status_code == 400 and answer.json()["where"] == where, (config, answer.text)
    assert server.post("/jobs", json={"kind": "rm -rf", "config": {}}).json()["where"] == "kind"
    assert server.get("/jobs").json() == []
    scheduler = server.app.state.scheduler
    resolved = scheduler.resolve_paths({"feature_encoder": "dino:facebook/dinov2-small",
                                        "generator": {"kind": "sd3", "pretrained": f"upload:{upload}"}})
    assert resolved["feature_encoder"] == "dino:facebook/dinov2-small"
    assert Path(resolved["generator"]["pretrained"]).is_relative_to(scheduler.data_root)


def test_the_token_comes_from_an_owner_only_file_or_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_token(token_file)
    token_file.chmod(0o600)
    assert load_token(token_file) == TOKEN
    assert load_token(None, {TOKEN_ENV: TOKEN}) == TOKEN
    with pytest.raises(InputError, match="at least 16"):
        load_token(None, {TOKEN_ENV: "short"})
    with pytest.raises(InputError, match="token-file"):
        load_token(None, {})
    with pytest.raises(InputError, match="secrets"):
        load_token(tmp_path / "missing")
