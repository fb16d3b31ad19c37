"""Model-selection flags of the gallery commands (index, localize, serve) spelled once."""

from __future__ import annotations

import argparse


def add_model_source(parser: argparse.ArgumentParser, variant: bool = True) -> None:
    parser.add_argument("--checkpoint", help="trained spikevimformer checkpoint (.pt)")
    parser.add_argument("--onnx", help="exported ONNX model (spikevimformer export) run with ONNX Runtime")
    if variant:
        parser.add_argument("--variant", default=None, help="tiny | small, for a seeded random init (no checkpoint)")
