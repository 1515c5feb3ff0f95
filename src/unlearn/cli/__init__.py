"""The command line: `unlearn run|compare|fit|apply|eval|report|audit|diffusion|llm` (see `unlearn --help`).

One module per subcommand; each registers itself with `add_parser(commands)`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from unlearn.cli import apply, audit, diffusion, eval, fit, llm, report, run
from unlearn.errors import UnlearnError

SUBCOMMANDS = (run, apply, fit, eval, report, audit, diffusion, llm)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="unlearn", description="Make a trained model forget, and prove it.")
    commands = main.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except UnlearnError as error:
        print(f"unlearn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
