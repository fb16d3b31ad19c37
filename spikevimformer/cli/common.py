"""Flags shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse

from ..device import resolve_device
from ..models import VARIANTS

__all__ = ["add_device", "add_image_size", "add_model", "add_registration", "add_variant", "describe_model",
           "load_model", "register_config", "resolve_device"]


def add_variant(parser: argparse._ActionsContainer, default: str | None = "tiny", help: str = "backbone size") -> None:
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=default, help=help)


def image_size(text: str) -> int:
    """argparse type: a square input side the backbone takes (a multiple of 16, at least 32), checked before work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, got {text!r}") from None
    if value < 32 or value % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16 of at least 32 px, got {value}")
    return value


def add_image_size(parser: argparse.ArgumentParser, default: int = 384) -> None:
    parser.add_argument("--image-size", type=image_size, default=default,
                        help="square input side (multiple of 16, at least 32; default: %(default)s)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """The one switch that lets a command replace outputs already at --out (fileio.refuse_overwrite)."""
    parser.add_argument("--overwrite", action="store_true", help="replace files already at --out (default: refuse)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present, else CPU), 'cpu', 'cuda:0'...")


def add_model(parser: argparse.ArgumentParser, onnx: bool = False) -> None:
    """The model flags of every command that runs a model: --checkpoint | --init | seeded random init [| --onnx]."""
    given = "--checkpoint, --init or --onnx" if onnx else "--checkpoint or --init"
    group = parser.add_argument_group("model", f"without {given}: a seeded, BN-calibrated random init "
                                      "(the same weights every run)")  # fmt: skip
    group.add_argument("--checkpoint", help="a trained spikevimformer checkpoint (runs/<name>/best.pt or last.pt)")
    add_variant(group, default=None,
                help="tiny | small (default: what --checkpoint, --init or the gallery index holds, else tiny)")
    group.add_argument("--init", help="official E-SpikeFormer ImageNet weights (V3_*M_1x4.pth) for the backbone")
    if onnx:
        group.add_argument("--onnx", help="an exported model (spikevimformer export), run with ONNX Runtime")


def describe_model(args: argparse.Namespace, variant: str, tag: str) -> str:
    """One line saying which weights a command ran, for its printout and report."""
    if args.checkpoint:
        return f"checkpoint {args.checkpoint} ({variant}, sha256 {tag[:12]})"
    if args.init:
        return f"{variant} backbone from {args.init} (ImageNet init)"
    return f"{variant}, random initialisation ({tag})"


def load_model(args: argparse.Namespace):
    """The model the flags name, in eval mode, and a one-line description of where it came from."""
    from ..checkpoint import load_model as load

    model, tag = load(args.checkpoint, args.variant, args.init)
    return model, describe_model(args, model.variant, tag)


def add_registration(parser: argparse.ArgumentParser) -> None:
    """Flags of the registration stage (photo -> orthophoto -> camera pose) of `localize` and `serve`."""
    from ..geo.register import FEATURES, RegisterConfig

    d = RegisterConfig()
    g = parser.add_argument_group("registration", "match the photo to the orthophoto around the top-k tiles, re-rank "
                                  "them by inliers and solve the camera position")  # fmt: skip
    g.add_argument("--fov", type=float, metavar="DEG",
                   help="horizontal field of view of photos whose EXIF has no focal length (without it and without "
                        "EXIF: the look-at point only)")  # fmt: skip
    g.add_argument("--no-register", action="store_true", help="tile-level answers only (retrieval, no registration)")
    g.add_argument("--features", choices=FEATURES, default=d.features, help="local features (default: %(default)s)")
    g.add_argument("--min-inliers", type=int, default=d.min_inliers,
                   help="homography inliers a candidate needs to be verified (default: %(default)s)")  # fmt: skip
    g.add_argument("--margin", type=float, default=d.margin,
                   help="reference window around a tile, in footprints on each side (default: %(default)s)")


def register_config(args: argparse.Namespace):
    """RegisterConfig from the flags of add_registration, or None for --no-register."""
    from ..geo.register import RegisterConfig

    if args.no_register:
        return None
    return RegisterConfig(features=args.features, min_inliers=args.min_inliers, margin=args.margin)
