"""``hoshikage`` command line: each subcommand lives in its own module with
``register(subparsers)`` and a handler taking the parsed args and returning an exit code."""
from __future__ import annotations

import argparse
import logging
import sys

from . import generate as _generate
from . import server_commands as _server_commands

SUBCOMMANDS = [_generate, _server_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoshikage", description="GGUF models on llama.cpp: "
                                     "autoregressive and diffusion LLMs, library and OpenAI-compatible server")
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default: WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
