"""``alignflow`` command line: a thin client of the engine API.

This module only builds the parser from each engine area's ``commands`` module and dispatches to the handler the
parsed subcommand names. Options come from ``--config FILE`` (YAML/JSON, same names as the flags) and are overridden
by the flags given. Bad input prints one line naming the file or parameter and exits with code 2. The commands
modules import their heavy dependencies (torch, MONAI, ...) inside their handlers, so ``alignflow --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alignflow.advisor import commands as advisor_commands
from alignflow.augment import commands as augment_commands
from alignflow.cli_helpers import EXIT_INPUT_ERROR, add_common_flags
from alignflow.downstream import commands as downstream_commands
from alignflow.errors import InputError
from alignflow.export import commands as export_commands
from alignflow.fidelity import commands as fidelity_commands
from alignflow.generator import commands as generator_commands
from alignflow.masks import commands as masks_commands
from alignflow.metrics import commands as metrics_commands
from alignflow.runners import commands as runners_commands
from alignflow.segmentation import commands as segmentation_commands
from alignflow.server import commands as server_commands

# In the order of ``alignflow --help``: the main workflow first.
COMMAND_MODULES = (generator_commands, augment_commands, masks_commands, export_commands, metrics_commands,
                   fidelity_commands, advisor_commands, segmentation_commands, downstream_commands, server_commands,
                   runners_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description=__doc__.splitlines()[0], argument_default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(commands, add_common_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except InputError as error:
        print(f"alignflow {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"alignflow {args.command}: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
