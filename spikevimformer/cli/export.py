"""`spikevimformer export`: ONNX of the inference path (BN folded) with a PyTorch parity check."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..export import export_onnx, onnx_parity, quantize_int8
from ..fileio import refuse_overwrite
from .common import add_image_size, add_model, add_overwrite, load_weights

PARITY_MIN = 0.9999


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the inference model to ONNX and check parity with PyTorch")
    add_model(p)
    add_image_size(p)
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--check-images", type=int, default=4, help="random images for the parity check (0: skip)")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (dynamic int8), kept only on parity")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    refuse_overwrite([out] + ([out.with_suffix(".int8.onnx")] if args.int8 else []), args.overwrite)
    model, tag, source = load_weights(args)
    path = export_onnx(model, args.out, args.image_size, tag)
    print(f"wrote {path} ({source}, {model.descriptor_dim}-d, weights tag {tag})")
    if args.check_images <= 0:
        return 0
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.check_images, 3, args.image_size, args.image_size, generator=gen)
    cos = onnx_parity(model, path, images)
    print(f"parity: min cosine {cos:.6f} over {args.check_images} images (need >= {PARITY_MIN})")
    if cos < PARITY_MIN:
        raise ValueError(f"ONNX descriptors disagree with PyTorch (min cosine {cos:.6f})")
    if args.int8:
        q = quantize_int8(path, path.with_suffix(".int8.onnx"))
        qcos = onnx_parity(model, q, images)
        print(f"int8: min cosine {qcos:.6f}" + ("" if qcos >= PARITY_MIN else " - below parity, removed"))
        if qcos < PARITY_MIN:
            q.unlink()
    return 0
