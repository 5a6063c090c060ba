"""Runners: where a job runs (this computer, a remote GPU server, several processes, a SLURM cluster).

Every runner implements :class:`alignflow.runners.base.Runner`, so the plugin and the CLI drive any of them the same
way: submit a job (kind + config), follow its event stream, cancel it, fetch its artifacts.
"""
