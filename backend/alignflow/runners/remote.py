"""The remote runner: jobs on an ``alignflow serve`` GPU server, driven over HTTP like local ones.

Implements :class:`alignflow.runners.base.Runner`, so the plugin's "remote server" option and ``alignflow remote``
use the same calls as the local runner. Local dataset folders named in a job's config are zipped and uploaded on
submit (once per folder and runner). Every request has a timeout and is retried with exponential backoff when the
server cannot be reached or answers 502/503/504; a submit carries an idempotency key, so a retried submit never
starts a job twice. ``follow`` reads the job's server-sent event stream and reconnects from the last event id it
received (``Last-Event-ID``), so a dropped connection resumes where it stopped; against a server without the stream
it long-polls from the last event seen instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from alignflow.errors import InputError
from alignflow.runners.base import FINAL_STATES, JOB_KINDS, JobStatus

DATASET_KEYS = ("source", "masks")  # config keys that may name a dataset folder (images/ + masks/)
IMAGE_KEYS = ("references", "target", "images")  # config keys that name image folders or files
MODEL_KEYS = ("init", "generator", "evaluator", "mask_segmenter", "segmenter")  # results of earlier jobs: job:ID/...
SERVER_PREFIXES = ("upload:", "job:")
RETRY_STATUSES = (502, 503, 504)
CANCEL_TIMEOUT_S = 60.0  # the server waits up to 20 s for the job to checkpoint before killing it
DEFAULT_PORT = 8765


class RemoteError(RuntimeError):
    """The server could not be reached after every retry, or answered something this client does not understand."""


class _NoStream(Exception):
    """The server has no event stream endpoint (an older version): use long polling."""


class RemoteRunner:
    """Jobs on an ``alignflow serve`` server at ``url`` (e.g. ``https://gpu.lab.example:8765``)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        if not url.startswith(("http://", "https://")):
            raise InputError("url", "the server's address, http(s)://HOST:PORT", got=repr(url))
        if not token:
            raise InputError("token", "the server's bearer token", got="nothing")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self._uploaded: dict[tuple[str, str], str] = {}  # (kind, path) -> upload id

    # ------------------------------------------------------------------ Runner
    def submit(self, kind: str, config: dict[str, Any], resume: bool = False) -> str:
        """Start a job on the server (the Runner contract). The server owns its run folders and replaces the config's
        ``out``, so a server run is continued by its job id (``resume``), never by a folder: ``resume=True`` is refused."""
        if resume:
            raise InputError("resume", "RemoteRunner.resume(job_id) (alignflow remote resume JOB): the server owns its run "
                                       "folders, so a remote run is continued by its job id", "submit(..., resume=True)")
        if kind not in JOB_KINDS:
            raise InputError("kind", f"one of {', '.join(JOB_KINDS)}", repr(kind))
        remote_config = self._with_uploads(config)
        body = {"kind": kind, "config": remote_config, "request_id": uuid.uuid4().hex}
        return self._request("POST", "/jobs", json=body).json()["job_id"]

    def status(self, job_id: str) -> JobStatus:
        record = self._request("GET", f"/jobs/{job_id}").json()
        details = {key: record.get(key) for key in ("slot", "submitted", "started", "finished", "resumed_from")}
        return JobStatus(record["job_id"], record["kind"], record["state"], record["run_dir"], record["exit_code"], record["message"], details)

    def events(self, job_id: str, since: int = 0) -> list[dict[str, Any]]:
        return self._events(job_id, since, wait=0.0)["events"]

    def cancel(self, job_id: str) -> None:
        self._request("POST", f"/jobs/{job_id}/cancel", timeout=max(self.timeout, CANCEL_TIMEOUT_S))

    def read_file(self, job_id: str, path: str | PurePosixPath, *, retry: bool = True) -> bytes:
        """One file of the job's run folder (``path`` relative to it, e.g. ``previews/step_0000100.png``), as bytes.

        ``retry=False`` asks once (a viewer polling for previews would rather skip one than wait through backoff)."""
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise InputError("path", "a file path inside the job's run folder", repr(str(path)))
        return self._request("GET", f"/jobs/{job_id}/files/{relative.as_posix()}", retries=None if retry else 0).content

    def fetch(self, job_id: str, destination: Path) -> Path:
        """Download the run folder into ``destination`` (new or empty): all of it, or nothing on failure."""
        from alignflow.atomic import atomic_directory
        from alignflow.runners.archives import extract_archive

        destination = Path(destination)
        if destination.exists() and any(destination.iterdir()):
            raise InputError(destination, "a new or empty folder for the job's artifacts", got="a folder with files")
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".zip")
        os.close(fd)
        try:
            self._download(f"/jobs/{job_id}/artifacts", Path(staged))
            with atomic_directory(destination) as folder:
                extract_archive(Path(staged), folder / "run", max_extracted_bytes=1 << 60, name=f"job {job_id} artifacts")
                for entry in (folder / "run").iterdir():
                    entry.rename(folder / entry.name)
                (folder / "run").rmdir()
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise InputError(destination, "enough free disk space for the job's artifacts", got=error.strerror) from None
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
        return destination

    # ------------------------------------------------------------------ beyond the contract
    def jobs(self) -> list[str]:
        return [record["job_id"] for record in self._request("GET", "/jobs").json()]

    def resume(self, job_id: str) -> str:
        """A new job on the server that continues ``job_id`` (failed or cancelled) from its last checkpoint."""
        return self._request("POST", f"/jobs/{job_id}/resume").json()["job_id"]

    def follow(self, job_id: str, since: int = 0, wait: float = 20.0) -> Iterator[dict[str, Any]]:
        """Every event from ``since`` on, as it happens, until the job ends; survives dropped connections.

        Server-sent events (``GET /jobs/{id}/events/stream``); after a drop it reconnects (backoff, ``retries``
        failed attempts in a row at most) with the id of the last event received, so nothing is lost or repeated.
        A server without the stream (HTTP 404 or 405 there) is long-polled (``wait`` seconds per request) instead.
        """
        failures = 0
        while True:
            try:
                for event_type, event_id, data in self._stream(job_id, since):
                    failures = 0
                    if event_type == "end":
                        return
                    since = int(event_id) + 1
                    yield data
            except _NoStream:
                yield from self._long_poll(job_id, since, wait)
                return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:  # dropped, or no answer
                problem = f"{type(error).__name__}: {error}"
            else:
                problem = "the stream closed before the job ended"
            failures += 1
            if failures > self.retries:
                raise RemoteError(f"{self.url}/jobs/{job_id}/events/stream: {problem} ({failures} tries in a row)")
            time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1)))

    def _long_poll(self, job_id: str, since: int, wait: float) -> Iterator[dict[str, Any]]:
        while True:
            answer = self._events(job_id, since, wait)
            yield from answer["events"]
            since = answer["next"]
            if answer["state"] in FINAL_STATES and not answer["events"]:
                return

    def _stream(self, job_id: str, since: int) -> Iterator[tuple[str, str | None, Any]]:
        """(event type, id, decoded data) of each server-sent event; comments (heartbeats) are skipped."""
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": str(since - 1)} if since > 0 else {})}
        # The read timeout applies between chunks: the server's heartbeats (every 10 s) keep an idle stream alive.
        response = self.session.get(f"{self.url}/jobs/{job_id}/events/stream", params={"since": since}, headers=headers,
                                    stream=True, timeout=self.timeout)
        with response:
            if response.status_code in (404, 405) and "text/event-stream" not in response.headers.get("content-type", ""):
                if response.status_code == 405 or response.json().get("detail") == "Not Found":  # the route, not the job
                    raise _NoStream()
            if response.status_code in RETRY_STATUSES:
                raise requests.ConnectionError(f"HTTP {response.status_code}")
            self._checked(response)
            fields: dict[str, str] = {}
            for raw in response.iter_lines(chunk_size=None):  # chunks as they arrive, not a fixed size
                line = raw.decode("utf-8")
                if line:
                    name, _, value = line.partition(":")
                    if name:  # a line starting with ":" is a comment
                        fields[name] = fields.get(name, "") + ("\n" if name in fields else "") + value.removeprefix(" ")
                    continue
                if "data" in fields:
                    yield fields.get("event", "message"), fields.get("id"), json.loads(fields["data"])
                fields = {}

    def upload(self, path: Path | str | list[Path | str], kind: str) -> str:
        """Zip and upload a dataset folder (``kind="dataset"``) or image folder/files (``"images"``); returns its id."""
        key = (kind, str(path))
        if key not in self._uploaded:
            fd, staged = tempfile.mkstemp(suffix=".zip")
            os.close(fd)
            try:
                _zip_set(path, kind, Path(staged))
                name = Path(path).name if isinstance(path, (str, Path)) else "images"
                self._uploaded[key] = self._request("POST", "/uploads", params={"kind": kind, "name": f"{name}.zip"}, body_path=Path(staged),
                                                    headers={"Content-Type": "application/zip"}).json()["upload_id"]
            finally:
                os.unlink(staged)
        return self._uploaded[key]

    # ------------------------------------------------------------------ HTTP
    def _events(self, job_id: str, since: int, wait: float) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}/events", params={"since": since, "wait": wait}, timeout=self.timeout + wait).json()

    def _request(self, method: str, path: str, *, timeout: float | None = None, body_path: Path | None = None,
                 retries: int | None = None, **kwargs: Any) -> requests.Response:
        problem = "no attempt"
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            try:
                with contextlib.ExitStack() as stack:
                    if body_path is not None:  # reopened on every attempt: a retry sends the whole body again
                        kwargs["data"] = stack.enter_context(open(body_path, "rb"))
                    response = self.session.request(method, self.url + path, timeout=timeout or self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in RETRY_STATUSES:
                problem = f"HTTP {response.status_code}"
                continue
            return self._checked(response)
        raise RemoteError(f"{self.url}{path}: no answer after {retries + 1} tries (last: {problem})")

    def _checked(self, response: requests.Response) -> requests.Response:
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:200]}
        if response.status_code == 401:
            raise InputError("token", f"the token of the server at {self.url}", got="a token it refused (HTTP 401)")
        if "where" in body and "expected" in body:
            raise InputError(body["where"], body["expected"], body.get("got"))
        if response.status_code in (404, 413, 422, 507):
            raise InputError(response.request.path_url, "a request the server accepts", got=f"HTTP {response.status_code}: {body.get('detail')}")
        raise RemoteError(f"{response.request.method} {response.url}: HTTP {response.status_code}: {body.get('detail')}")

    def _download(self, path: str, target: Path) -> None:
        response = self._request("GET", path, stream=True)
        with response, open(target, "wb") as sink:
            for chunk in response.iter_content(1 << 20):
                sink.write(chunk)

    def _with_uploads(self, config: dict[str, Any]) -> dict[str, Any]:
        remote = dict(config)
        for key in DATASET_KEYS + IMAGE_KEYS:
            value = config.get(key)
            if isinstance(value, list) and value and all(_is_local(item) for item in value):
                remote[key] = f"upload:{self.upload(value, 'images')}"
            elif _is_local(value):
                folder = Path(value)
                is_dataset = folder.is_dir() and (folder / "images").is_dir() and (folder / "masks").is_dir()
                remote[key] = f"upload:{self.upload(folder, 'dataset' if is_dataset else 'images')}"
        for key in MODEL_KEYS:
            if _is_local(config.get(key)):
                raise InputError(f"config.{key}", "job:ID/FOLDER of a job on the server (models are not uploaded)", got=repr(config[key]))
        return remote


def _is_local(value: Any) -> bool:
    return isinstance(value, (str, Path)) and not str(value).startswith(SERVER_PREFIXES) and Path(value).exists()


def _zip_set(path: Path | str | list[Path | str], kind: str, archive: Path) -> None:
    from alignflow.data import list_images

    files: list[tuple[Path, str]]
    if kind == "dataset":
        root = Path(path)
        files = [(file, file.relative_to(root).as_posix()) for sub in ("images", "masks") for file in sorted((root / sub).iterdir()) if file.is_file()]
    else:
        files = [(file, file.name) for file in list_images(path)]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:  # images are compressed already
        for file, name in files:
            zipped.write(file, name)

