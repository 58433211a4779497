"""`folio <task> <verb>`: one sub-command per registered task and command (`folio.tasks`); each brings
its own flags. Nothing else lives here."""

from __future__ import annotations

import sys

from folio.errors import FolioError
from folio.flags import Formatter, Parser
from folio.version import __version__


def build_parser() -> Parser:
    from folio.tasks import COMMANDS, TASKS

    parser = Parser(prog="folio", formatter_class=Formatter, description="Folio: recurrent networks and attention for NLP.")
    parser.add_argument("--version", action="version", version=f"folio {__version__}")
    commands = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for command in [*TASKS.values(), *COMMANDS.values()]:
        command.add_cli(commands.add_parser(command.name, help=command.help, description=command.description,
                                            formatter_class=Formatter))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FolioError as err:
        print(f"folio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("folio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
