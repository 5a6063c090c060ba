"""``alignflow serve``: a job server for a lab's GPU workstation (FastAPI), the way MONAI Label serves Slicer.

Clients upload datasets (zip), submit the CLI's jobs with the same config files, follow their event streams, cancel
them and download their run folders. Jobs run as ``alignflow`` subprocesses through the local runner, one queue
per GPU; their records live in SQLite, so a restarted server knows every job. See docs/remote.md.
"""
