"""The HTTP API of ``alignflow serve`` (FastAPI; its OpenAPI schema at /docs documents every endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from alignflow.atomic import atomic_write_json, remove_stale_temporaries, temporary_prefix
from alignflow.errors import InputError
from alignflow.runners.archives import UPLOAD_KINDS, ArchiveTooLarge, unpack_upload
from alignflow.runners.auth import token_matches
from alignflow.runners.base import FINAL_STATES, QUEUED
from alignflow.runners.local import read_complete_events
from alignflow.runs.events import EVENTS_FILE, read_events
from alignflow.server.scheduler import Scheduler, new_id
from alignflow.server.store import JobStore

MAX_WAIT_S = 30.0  # longest long poll; below common proxy timeouts (60 s)
POLL_INTERVAL_S = 0.2


@dataclass
class ServerSettings:
    data_root: Path
    token: str
    gpus: list[str] = field(default_factory=lambda: ["cpu"])
    max_upload_bytes: int = 2 << 30
    max_extracted_bytes: int = 8 << 30
    scratch: Path | None = None  # where uploads and artifact archives are staged (default DATA_ROOT/scratch)
    poll_s: float = 0.5
    heartbeat_s: float = 10.0  # an event stream with nothing to say sends a comment this often (proxies close idle streams)

    @property
    def scratch_dir(self) -> Path:
        return Path(self.scratch) if self.scratch is not None else Path(self.data_root) / "scratch"


class JobRequest(BaseModel):
    kind: str = Field(description="an alignflow subcommand: train, align, train-masks, masks, generate, augment, train-segmenter, segment")
    config: dict[str, Any] = Field(description="the same options as the CLI's --config file; paths as upload:ID[/sub], job:ID[/sub] or inside the data root")
    request_id: str | None = Field(None, max_length=100, description="idempotency key: a retried submit with the same key returns the same job")


def create_app(settings: ServerSettings) -> FastAPI:
    data_root = Path(settings.data_root).resolve()
    uploads_root = data_root / "uploads"
    uploads_root.mkdir(parents=True, exist_ok=True)
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(uploads_root, settings.scratch_dir)
    store = JobStore(data_root / "jobs.sqlite")
    scheduler = Scheduler(store, data_root, settings.gpus, poll_s=settings.poll_s)
    bearer = HTTPBearer(auto_error=False, description="the server's token (alignflow serve --token-file)")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not token_matches(credentials.credentials, settings.token):
            raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer TOKEN)", headers={"WWW-Authenticate": "Bearer"})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        scheduler.stop()  # the jobs go on: a restarted server tracks them again

    app = FastAPI(title="alignflow job server", version="1", lifespan=lifespan, dependencies=[Depends(require_token)])
    app.state.scheduler = scheduler
    app.state.settings = settings

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        status = 413 if isinstance(error, ArchiveTooLarge) else 400
        return JSONResponse({"detail": str(error), "where": error.where, "expected": error.expected, "got": error.got}, status_code=status)

    def job_or_404(job_id: str):
        record = store.get(job_id)
        if record is None:
            raise HTTPException(404, f"no job {job_id!r} on this server")
        return record

    @app.get("/server", summary="the server's GPU slots and the job on each")
    def server() -> dict[str, Any]:
        return {"slots": scheduler.occupied(), "queued": len(store.list((QUEUED,))), "data_root": str(data_root)}

    # ------------------------------------------------------------------ uploads
    @app.post("/uploads", status_code=201, summary="upload a dataset (images/ + masks/) or a folder of images as a zip body")
    async def upload(request: Request, kind: str = Query(description=f"one of {', '.join(UPLOAD_KINDS)}"),
                     name: str = Query("upload.zip", max_length=200)) -> dict[str, Any]:
        if kind not in UPLOAD_KINDS:
            raise InputError("kind", f"one of {', '.join(UPLOAD_KINDS)}", got=repr(kind))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise ArchiveTooLarge(name, f"an upload of at most {settings.max_upload_bytes} bytes", got=f"{declared} bytes")
        fd, staged = tempfile.mkstemp(dir=settings.scratch_dir, prefix=temporary_prefix("upload"), suffix=".tmp")
        try:
            received = 0
            with os.fdopen(fd, "wb") as sink:
                async for chunk in request.stream():  # counted as it arrives: Content-Length may be absent or false
                    received += len(chunk)
                    if received > settings.max_upload_bytes:
                        raise ArchiveTooLarge(name, f"an upload of at most {settings.max_upload_bytes} bytes", got="more")
                    sink.write(chunk)
            upload_id = new_id()
            folder = uploads_root / upload_id
            try:
                counts = await run_in_threadpool(unpack_upload, Path(staged), folder / "data", kind, settings.max_extracted_bytes, name)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
        record = {"upload_id": upload_id, "kind": kind, "name": name, "uploaded": time.time(), **counts}
        atomic_write_json(folder / "upload.json", record)
        return record

    @app.get("/uploads", summary="every uploaded set")
    def uploads() -> list[dict[str, Any]]:
        return [json.loads((folder / "upload.json").read_text()) for folder in sorted(uploads_root.iterdir()) if (folder / "upload.json").exists()]

    # ------------------------------------------------------------------ jobs
    @app.post("/jobs", status_code=201, summary="submit a job (queued until a GPU slot is free)")
    def submit(request: JobRequest) -> dict[str, Any]:
        return scheduler.submit(request.kind, request.config, request.request_id).public()

    @app.get("/jobs", summary="every job, oldest first")
    def jobs() -> list[dict[str, Any]]:
        return [record.public() for record in store.list()]

    @app.get("/jobs/{job_id}", summary="a job's record: state, exit code, failure message")
    def job(job_id: str) -> dict[str, Any]:
        return job_or_404(job_id).public()

    @app.get("/jobs/{job_id}/events", summary="the job's events after the first `since` (long polling up to `wait` s)")
    async def events(job_id: str, since: int = Query(0, ge=0), wait: float = Query(0.0, ge=0.0)) -> dict[str, Any]:
        deadline = time.monotonic() + min(wait, MAX_WAIT_S)
        while True:
            record = await run_in_threadpool(job_or_404, job_id)
            found = list(await run_in_threadpool(read_events_list, Path(record.run_dir)))[since:]
            if found or record.state in FINAL_STATES or time.monotonic() >= deadline:
                return {"events": found, "next": since + len(found), "state": record.state}
            await asyncio.sleep(POLL_INTERVAL_S)

    @app.get("/jobs/{job_id}/events/stream", response_class=EventSourceResponse,
             summary="the job's events as server-sent events (text/event-stream) until the job ends",
             description="Each event's `id:` is its index in the job's event list. A reconnecting client sends the last id it "
                         "received as `Last-Event-ID` (or `since`, the count of events it has) and continues after it. "
                         "Comment lines (`: heartbeat`) keep an idle stream open; an `end` event (data: the final state and "
                         "`next`) closes it once the job has ended and every event has been sent.")
    async def event_stream(record=Depends(job_or_404), since: int = Depends(_first_event_to_send)) -> AsyncIterable[ServerSentEvent]:
        path, offset, index = Path(record.run_dir) / EVENTS_FILE, 0, 0
        quiet_since = time.monotonic()
        while True:
            state = (await run_in_threadpool(job_or_404, record.job_id)).state  # before reading: no event written later is missed
            found, offset = await run_in_threadpool(read_complete_events, path, offset)
            for event in found:
                if index >= since:
                    yield ServerSentEvent(data=event, id=str(index))
                    quiet_since = time.monotonic()
                index += 1
            if not found and state in FINAL_STATES:
                yield ServerSentEvent(event="end", data={"state": state, "next": max(index, since)})
                return
            if time.monotonic() - quiet_since >= settings.heartbeat_s:
                yield ServerSentEvent(comment="heartbeat")
                quiet_since = time.monotonic()
            await asyncio.sleep(POLL_INTERVAL_S)

    @app.post("/jobs/{job_id}/cancel", summary="stop the job and its whole process tree (its last checkpoint stays)")
    def cancel(job_id: str) -> dict[str, Any]:
        job_or_404(job_id)
        return scheduler.cancel(job_id).public()

    @app.post("/jobs/{job_id}/resume", status_code=201, summary="a new job that continues a failed or cancelled one from its last checkpoint")
    def resume(job_id: str) -> dict[str, Any]:
        job_or_404(job_id)
        return scheduler.resume(job_id).public()

    # ------------------------------------------------------------------ artifacts
    @app.get("/jobs/{job_id}/artifacts", summary="the job's run folder as a zip (checkpoints, generator, outputs)")
    def artifacts(job_id: str) -> FileResponse:
        run_dir = Path(job_or_404(job_id).run_dir)
        if not run_dir.is_dir():
            raise HTTPException(404, f"job {job_id} has written nothing yet")
        archive = _zip_folder(run_dir, settings.scratch_dir)
        return FileResponse(archive, media_type="application/zip", filename=f"{job_id}.zip", background=BackgroundTask(os.unlink, archive))

    @app.get("/jobs/{job_id}/files/{path:path}", summary="one file of the job's run folder")
    def artifact_file(job_id: str, path: str) -> FileResponse:
        run_dir = Path(job_or_404(job_id).run_dir).resolve()
        file = (run_dir / path).resolve()
        if not file.is_relative_to(run_dir) or not file.is_file():
            raise HTTPException(404, f"no file {path!r} in job {job_id}'s run folder")
        return FileResponse(file)

    return app


def _first_event_to_send(since: int = Query(0, ge=0, description="the count of events the client has"),
                         last_event_id: str | None = Header(None, description="the id of the last event received; wins over since")) -> int:
    """Checked before the stream starts: once it has, an error could only break the connection."""
    if last_event_id is None:
        return since
    if not last_event_id.strip().isdigit():
        raise InputError("Last-Event-ID", "the id (a number) of the last event received", repr(last_event_id))
    return int(last_event_id) + 1


def _zip_folder(folder: Path, scratch: Path) -> Path:
    """Zip ``folder`` into ``scratch``; a failed write (disk full) leaves no partial archive and answers 507."""
    fd, name = tempfile.mkstemp(dir=scratch, prefix=temporary_prefix("artifacts"), suffix=".tmp")
    os.close(fd)
    try:
        # Stored, not deflated: checkpoints and PNGs do not compress, and the job keeps the CPU.
        with zipfile.ZipFile(name, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    archive.write(file, file.relative_to(folder).as_posix())
    except OSError as error:
        os.unlink(name)
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise HTTPException(507, f"the server's scratch folder {scratch} is full ({error.strerror}); free space there and retry") from None
        raise
    return Path(name)


__all__ = ["ServerSettings", "create_app"]


def remove_leftovers(uploads_root: Path, scratch: Path) -> list[Path]:
    """What a killed server left: staged uploads and artifact archives in the scratch folder, half-unpacked uploads
    (no ``upload.json``: the client never got their id). Run on start, before any request; one log line each."""
    removed = remove_stale_temporaries(scratch)
    for folder in sorted(uploads_root.iterdir()):
        if not folder.is_dir():
            continue
        removed += remove_stale_temporaries(folder)
        if not (folder / "upload.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for path in removed:
        print(f"alignflow serve: removed {path}, left over from an interrupted upload or download", file=sys.stderr, flush=True)
    return removed


def read_events_list(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of a run folder so far, as a list (read in a worker thread by the async handlers)."""
    return list(read_events(run_dir))
