"""`python -m pachka_actors demo` runs the demo; `... options` prints the options table."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from .config import options_table
from .demo import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pachka_actors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="batch real messages into an SQLite file")
    demo.add_argument("--db", help="SQLite file to write and keep (default: a temporary "
                      "file, removed at the end)")
    demo.add_argument("--count", type=int, default=5000, help="messages to send")
    demo.add_argument("--base", default="multiprocTCPBase", help="Thespian system base")
    commands.add_parser("options", help="print the Markdown options table of docs/options.md")
    args = parser.parse_args(argv)
    if args.command == "demo":
        for ending in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(ending, _exit_cleanly)
        return run(args.db, args.count, args.base)
    sys.stdout.write(options_table())
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """`kill` or a closing terminal ends the demo as Ctrl-C does: through its `finally`s,
    which shut its actor system down and remove its temporary database."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
