"""``alignflow remote submit|status|logs|cancel|fetch|resume`` (the job server's client) and
``alignflow slurm submit|status|cancel`` (jobs on a SLURM cluster)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alignflow import environment
from alignflow.environment import env_folder, env_text

DEFAULT_PORT = 8765  # the same as alignflow.runners.remote.DEFAULT_PORT (not imported: keeps --help light)
URL_ENV = environment.SERVER_URL
SLURM_JOBS_ENV = environment.SLURM_JOBS


def register(commands: Any, add_common_flags: Any) -> None:
    remote = commands.add_parser("remote", help="drive jobs on an alignflow server", argument_default=argparse.SUPPRESS)
    actions = remote.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="submit a job; local dataset folders in the config are uploaded", argument_default=argparse.SUPPRESS)
    submit.add_argument("kind", help="train, align, train-masks, masks, generate, augment, train-segmenter or segment")
    submit.add_argument("--follow", action="store_true", help="then show its progress until it ends")
    for name, helptext in (("status", "a job's state (every job without JOB)"), ("logs", "a job's events"), ("cancel", "stop a job (its last checkpoint stays)"),
                           ("fetch", "download a job's run folder"), ("resume", "continue a failed or cancelled job from its last checkpoint")):
        action = actions.add_parser(name, help=helptext, argument_default=argparse.SUPPRESS)
        action.add_argument("job", nargs="?" if name == "status" else None, help="job id")
        if name == "logs":
            action.add_argument("--follow", "-f", action="store_true", help="keep showing events until the job ends")
            action.add_argument("--since", type=int, default=0, help="skip the first N events")
        if name == "fetch":
            action.add_argument("destination", help="new or empty folder")
    for action in actions.choices.values():
        action.add_argument("--url", help=f"server address (default ${URL_ENV}, else http://127.0.0.1:{DEFAULT_PORT})")
        action.add_argument("--token-file", help="file with the server's token (default: $ALIGNFLOW_SERVER_TOKEN)")
        action.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
        action.add_argument("--retries", type=int, default=5, help="tries after the first, with exponential backoff")
        add_common_flags(action)
        action.set_defaults(handler=_run_remote)
    _register_slurm(commands, add_common_flags)


def _register_slurm(commands: Any, add_common_flags: Any) -> None:
    slurm = commands.add_parser("slurm", help="run jobs on a SLURM cluster (submitit); see docs/remote.md", argument_default=argparse.SUPPRESS)
    actions = slurm.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="submit a job (the same config files as the CLI; paths on the shared filesystem)",
                                argument_default=argparse.SUPPRESS)
    submit.add_argument("kind", help="train, align, train-masks, masks, generate, augment, train-segmenter or segment")
    submit.add_argument("--resume", action="store_true", help="continue the run in the config's out from its last checkpoint")
    submit.add_argument("--cluster", choices=["slurm", "local"], default="slurm", help="local: submitit's local executor (no cluster)")
    submit.add_argument("--partition")
    submit.add_argument("--account")
    submit.add_argument("--nodes", type=int, default=1)
    submit.add_argument("--tasks-per-node", type=int, default=1, help="> 1: data-parallel training, one task per GPU")
    submit.add_argument("--gpus-per-node", type=int, default=0)
    submit.add_argument("--cpus-per-task", type=int, default=4)
    submit.add_argument("--mem-gb", type=float)
    submit.add_argument("--time-min", type=int, default=24 * 60, help="time limit in minutes (default 1440)")
    submit.add_argument("--setup", action="append", default=[], help="a shell line run first on the node (repeat): module load ..., source .../activate")
    for name, helptext in (("status", "a job's state (every job without JOB)"), ("cancel", "stop a job (it checkpoints first)")):
        action = actions.add_parser(name, help=helptext, argument_default=argparse.SUPPRESS)
        action.add_argument("job", nargs="?" if name == "status" else None, help="job id")
    for action in actions.choices.values():
        action.add_argument("--jobs-root", help=f"job folders, on the filesystem the nodes share (default ${SLURM_JOBS_ENV}, else ./alignflow-slurm)")
        add_common_flags(action)
        action.set_defaults(handler=_run_slurm)


def _run_remote(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import TerminalProgress, read_options
    from alignflow.runners.auth import load_token
    from alignflow.runners.remote import RemoteRunner

    url = getattr(args, "url", None) or env_text(URL_ENV) or f"http://127.0.0.1:{DEFAULT_PORT}"
    runner = RemoteRunner(url, load_token(getattr(args, "token_file", None)), timeout=args.timeout, retries=args.retries)
    action = args.action
    if action == "submit":
        config = read_options(args, drop=("action", "kind", "follow", "url", "token_file", "timeout", "retries"))
        job = runner.submit(args.kind, config)
        print(job, flush=True)
        return _follow(runner, job, 0, TerminalProgress()) if getattr(args, "follow", False) else 0
    if action == "status":
        if getattr(args, "job", None) is None:
            for job in runner.jobs():
                _print_status(runner.status(job))
        else:
            _print_status(runner.status(args.job))
        return 0
    if action == "logs":
        if getattr(args, "follow", False):
            return _follow(runner, args.job, args.since, lambda event: print(json.dumps(event), flush=True))
        for event in runner.events(args.job, since=args.since):
            print(json.dumps(event))
        return 0
    if action == "cancel":
        runner.cancel(args.job)
        _print_status(runner.status(args.job))
        return 0
    if action == "resume":
        print(runner.resume(args.job))
        return 0
    print(f"run folder of {args.job} written to {runner.fetch(args.job, Path(args.destination))}")
    return 0


def _run_slurm(args: argparse.Namespace) -> int:
    from alignflow.cli_helpers import read_options
    from alignflow.runners.slurm import SlurmOptions, SlurmRunner

    jobs_root = getattr(args, "jobs_root", None) or env_folder(SLURM_JOBS_ENV) or "alignflow-slurm"
    if args.action == "submit":
        options = SlurmOptions(partition=getattr(args, "partition", None), account=getattr(args, "account", None), nodes=args.nodes,
                               tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                               mem_gb=getattr(args, "mem_gb", None), timeout_min=args.time_min, setup=args.setup)
        runner = SlurmRunner(jobs_root, options, cluster=args.cluster)
        config = read_options(args, drop=("action", "kind", "resume", "cluster", "partition", "account", "nodes", "tasks_per_node", "gpus_per_node",
                                      "cpus_per_task", "mem_gb", "time_min", "setup", "jobs_root"))
        print(runner.submit(args.kind, config, resume=getattr(args, "resume", False)), flush=True)
        return 0
    runner = SlurmRunner(jobs_root)
    if args.action == "cancel":
        runner.cancel(args.job)
    for job in [args.job] if getattr(args, "job", None) else runner.jobs():
        _print_status(runner.status(job))
    return 0


def _follow(runner: Any, job: str, since: int, show: Any) -> int:
    for event in runner.follow(job, since):
        show(event)
    status = runner.status(job)
    _print_status(status)
    return 0 if status.state == "succeeded" else 1


def _print_status(status: Any) -> None:
    line = f"{status.job_id}  {status.kind:<15} {status.state}"
    if status.message:
        line += f"  ({status.message})"
    print(line, flush=True)
