"""Flags shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse

from ..device import resolve_device
from ..models import VARIANTS

__all__ = ["add_device", "add_image_size", "add_variant", "resolve_device"]


def add_variant(parser: argparse.ArgumentParser, default: str = "tiny") -> None:
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=default, help="backbone size")


def add_image_size(parser: argparse.ArgumentParser, default: int = 384) -> None:
    parser.add_argument("--image-size", type=int, default=default, help="square input side (multiple of 16)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present, else CPU), 'cpu', 'cuda:0'...")


def add_model(parser: argparse.ArgumentParser) -> None:
    """--checkpoint (ours) or --variant with optional --init (official E-SpikeFormer ImageNet weights)."""
    parser.add_argument("--checkpoint", help="a spikevimformer checkpoint (runs/<name>/last.pt or best.pt)")
    add_variant(parser)
    parser.add_argument("--init", help="with --variant: an E-SpikeFormer ImageNet checkpoint for the backbone")


def load_model(args: argparse.Namespace):
    """The model the flags name, in eval mode, and a one-line description of where it came from."""
    from ..checkpoint import load_backbone_checkpoint, model_from_checkpoint
    from ..models import build_model

    if args.checkpoint:
        return model_from_checkpoint(args.checkpoint).eval(), f"checkpoint {args.checkpoint}"
    model = build_model(args.variant)
    if args.init:
        load_backbone_checkpoint(model, args.init)
        return model.eval(), f"{args.variant} backbone from {args.init}"
    return model.eval(), f"{args.variant}, random initialisation (no checkpoint)"
