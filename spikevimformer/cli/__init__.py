"""`spikevimformer <command>`: one entry point; each command module wraps the Python API."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
COMMANDS = (
    "demo", "info", "synth", "data", "train", "evaluate", "robustness", "energy", "visualize",
    "index", "localize", "serve", "export",
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
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)  # on a line of its own, not after a progress bar
        return 130
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # bad input: one readable line, no traceback
        print(f"spikevimformer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
