"""``alignflow serve``: the job server on a (GPU) machine (docs/remote.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alignflow.errors import InputError
from alignflow.runners.commands import DEFAULT_PORT


def register(commands: Any, add_common_flags: Any) -> None:
    serve = commands.add_parser("serve", help="run the job server on this (GPU) machine; see docs/remote.md", argument_default=argparse.SUPPRESS)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; put TLS in front before opening it)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--token-file", help="file whose first line is the bearer token (default: $ALIGNFLOW_SERVER_TOKEN)")
    serve.add_argument("--data-root", default="alignflow-server", help="uploads, run folders and the job database (default ./alignflow-server)")
    serve.add_argument("--gpus", help="comma-separated GPU ids, one job queue each, or 'cpu' (default: every visible GPU, else cpu)")
    serve.add_argument("--max-upload-mb", type=int, default=2048, help="largest accepted upload (HTTP 413 above)")
    serve.add_argument("--scratch", help="folder for staging uploads and artifact archives (default DATA_ROOT/scratch)")
    add_common_flags(serve)
    serve.set_defaults(handler=_run_serve)


def _gpus(value: str | None) -> list[str]:
    if value:
        return [gpu.strip() for gpu in value.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())] or ["cpu"]


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from alignflow.runners.auth import load_token
    from alignflow.server.app import ServerSettings, create_app

    token = load_token(getattr(args, "token_file", None))
    if args.max_upload_mb < 1:
        raise InputError("--max-upload-mb", "at least 1", got=str(args.max_upload_mb))
    settings = ServerSettings(data_root=Path(args.data_root), token=token, gpus=_gpus(getattr(args, "gpus", None)),
                              max_upload_bytes=args.max_upload_mb << 20, max_extracted_bytes=4 * (args.max_upload_mb << 20),
                              scratch=Path(args.scratch) if getattr(args, "scratch", None) else None)
    app = create_app(settings)
    print(f"alignflow server on http://{args.host}:{args.port} (GPU slots: {', '.join(settings.gpus)}; data: {Path(args.data_root).resolve()})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
