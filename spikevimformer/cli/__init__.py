"""`spikevimformer <command>`: one entry point; each command module wraps the Python API."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import torch

from .. import __version__
from ..data.images import BadImageError
from ..engine.signals import Interrupted
from ..progress import set_progress

# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
COMMANDS = (
    "demo", "info", "synth", "data", "train", "evaluate", "robustness", "energy", "visualize",
    "index", "localize", "flight", "serve", "export", "adapt",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikevimformer", description="Spike-driven drone-view geo-localization (SpikeViMFormer)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--threads", type=_positive_int, metavar="N",
        help="CPU threads for PyTorch (default: one per core; 1 keeps a run steady on a machine shared with others)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    for path, command in _commands(parser):
        command.formatter_class = DefaultsFormatter
        for action in command._actions:  # flags without help text still show their default
            if action.option_strings and action.help is None and not (
                    action.default is None or action.default is False or action.default is argparse.SUPPRESS):
                action.help = "default: %(default)s"
        if path in LONG and "--no-progress" not in command._option_string_actions:
            command.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway "
                                 "when stderr is not a terminal)")  # fmt: skip
    return parser


# Commands that run long enough for progress bars, hence take --no-progress.
LONG = {"demo", "adapt", "synth", "data check", "train", "evaluate", "robustness", "energy", "visualize strips",
        "index build", "index add", "localize", "flight", "export"}  # fmt: skip


class DefaultsFormatter(argparse.HelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter without its noise: no "(default: None)" or "(default: False)",
    and nothing added where the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None or action.default is False
                or action.default is argparse.SUPPRESS):  # fmt: skip
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _commands(parser: argparse.ArgumentParser, path: str = ""):
    """(path such as "index build", parser) of every command and sub-command below `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                here = f"{path} {name}".strip()
                yield here, child
                yield from _commands(child, here)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    try:  # also a Ctrl-C while the commands' modules load (the package's own imports come before: torch)
        args = build_parser().parse_args(argv)
        if getattr(args, "no_progress", False):
            set_progress(False)
        if args.threads:
            torch.set_num_threads(args.threads)
        return _run(args)
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):  # the trainer has said what it saved and how to go on
            print("\ninterrupted", file=sys.stderr)  # on a line of its own, not after a progress bar
        return 130
    except BrokenPipeError:  # `... | head`: the reader has all it wanted; the flush at exit must not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # bad input: one readable line, no traceback
        hint = ""
        if isinstance(exc, BadImageError) and hasattr(args, "skip_bad_images"):
            hint = "; remove or replace it, or pass --skip-bad-images to skip and list such files"
        print(f"spikevimformer {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
