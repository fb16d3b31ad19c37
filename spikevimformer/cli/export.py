"""`spikevimformer export`: ONNX of the inference path (BN folded) with a PyTorch parity check."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..export import export_onnx, onnx_parity, parity_images, quantize_int8
from ..fileio import refuse_overwrite, require_dir
from .common import add_image_size, add_model, add_overwrite, load_weights

# Parity of the exported graph with PyTorch on real images. Not 1.0: float rounding at an NI-LIF threshold moves
# a spike (see export.onnx_parity). Measured on the shipped model and rendered views: 1.0 at 64 px; mean 0.99986,
# min 0.99965 at 384 px (tests/test_export.py). A wrong graph (a missing fold, a swapped channel) falls far below.
PARITY_MEAN = 0.9995
PARITY_MIN = 0.999


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the inference model to ONNX and check parity with PyTorch")
    add_model(p)
    add_image_size(p)
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--check-images", default="8", metavar="N_OR_DIR",
                   help="parity check on N drone views and tiles of a small synthetic world rendered for it, or on "
                        "images from a folder (0: no check)")  # fmt: skip
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (dynamic int8), kept only on parity")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    refuse_overwrite([out] + ([out.with_suffix(".int8.onnx")] if args.int8 else []), args.overwrite)
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"export needs ONNX and ONNX Runtime ({exc.name} is missing): pip install "
                         "'spikevimformer[deploy]' -c constraints.txt") from None
    folder = None if args.check_images.isdigit() else Path(args.check_images)
    if folder is not None:
        require_dir(folder, "--check-images")
    model, tag, source = load_weights(args)
    checking = out.with_name(f".{out.stem}.checking.onnx")  # the target appears only once parity holds
    try:
        export_onnx(model, checking, args.image_size, tag)
        if folder is not None or int(args.check_images) > 0:
            images = parity_images(args.image_size, int(args.check_images) if folder is None else 16, folder)
            mean, low = onnx_parity(model, checking, images)
            print(f"parity with PyTorch on {len(images)} real images: mean cosine {mean:.6f}, min {low:.6f} "
                  f"(need mean >= {PARITY_MEAN}, min >= {PARITY_MIN})")
            if mean < PARITY_MEAN or low < PARITY_MIN:
                raise ValueError(f"ONNX descriptors disagree with PyTorch (mean cosine {mean:.6f}, min {low:.6f}); "
                                 "nothing written")  # fmt: skip
        os.replace(checking, out)
    finally:
        checking.unlink(missing_ok=True)
    print(f"wrote {out} ({source}, {model.descriptor_dim}-d, weights tag {tag})")
    if args.int8 and (folder is not None or int(args.check_images) > 0):
        q = quantize_int8(out, out.with_suffix(".int8.onnx"))
        mean, low = onnx_parity(model, q, images)
        kept = mean >= PARITY_MEAN and low >= PARITY_MIN
        print(f"int8: mean cosine {mean:.6f}, min {low:.6f}" + ("" if kept else " - below parity, removed"))
        if not kept:
            q.unlink()
    return 0
