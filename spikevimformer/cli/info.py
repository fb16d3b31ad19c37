"""`spikevimformer info`: variants, parameter counts, descriptor sizes, MACs and ANN energy."""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..analysis.complexity import count_macs, total_macs
from ..analysis.conventions import E_MAC_PJ
from ..models import VARIANTS, build_model, count_parameters
from .common import DEFAULT_IMAGE_SIZE, add_device, add_image_size, resolve_device


def variant_summary(variant: str, image_size: int, num_classes: int) -> dict:
    """Parameter and MAC figures of one variant at one input size."""
    model = build_model(variant, num_classes)
    row = {
        "variant": variant,
        "backbone_params": count_parameters(model.backbone),
        "training_params": count_parameters(model),
        "descriptor_dim": model.descriptor_dim,
        "image_size": image_size,
    }
    for order in ("q(ktv)", "(qkt)v"):
        macs, stem = total_macs(count_macs(model.backbone, (image_size, image_size), order))
        row[f"gmacs_{order}"] = macs / 1e9
        row["stem_gmacs"] = stem / 1e9
    row["ann_energy_mj"] = row["gmacs_q(ktv)"] * 1e9 * E_MAC_PJ * 1e-9
    return row


def forward_check(variant: str, image_size: int, device: torch.device, batch: int = 2) -> dict:
    """Run the eval path on random images: descriptor shape, norms and time per image."""
    model = build_model(variant).eval().to(device)
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    with torch.inference_mode():
        model(images)  # warm-up
        start = time.perf_counter()
        desc = model(images)
        elapsed = time.perf_counter() - start
    return {
        "variant": variant,
        "shape": list(desc.shape),
        "norms": desc.norm(dim=1).tolist(),
        "s_per_image": elapsed / batch,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="model variants, parameter counts, descriptor sizes, MACs")
    add_image_size(p, default=DEFAULT_IMAGE_SIZE)
    add_device(p)
    p.add_argument("--num-classes", type=int, default=701, help="SHS classes for the training-time count")
    p.add_argument("--forward", action="store_true", help="also run each variant on random images and time it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = [variant_summary(v, args.image_size, args.num_classes) for v in VARIANTS]
    device = resolve_device(args.device)
    checks = [forward_check(v, args.image_size, device) for v in VARIANTS] if args.forward else []
    shipped = shipped_models()
    if args.json:
        print(json.dumps({"variants": rows, "forward": checks, "pretrained": shipped}, indent=2))
        return 0
    size = f"{args.image_size}x{args.image_size}"
    print(f"SpikeViMFormer variants at {size} (MACs per image; ANN energy at {E_MAC_PJ} pJ/MAC)")
    header = (
        f"{'variant':<8}{'backbone':>12}{'training':>12}{'desc':>6}"
        f"{'GMACs Q(KtV)':>14}{'GMACs (QKt)V':>14}{'stem':>8}{'ANN mJ':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['variant']:<8}{r['backbone_params']:>12,}{r['training_params']:>12,}{r['descriptor_dim']:>6}"
            f"{r['gmacs_q(ktv)']:>14.3f}{r['gmacs_(qkt)v']:>14.3f}{r['stem_gmacs']:>8.3f}{r['ann_energy_mj']:>8.2f}"
        )
    print(f"training params include SSA, SHS and a {args.num_classes}-class SHS classifier; "
          "inference runs the backbone only")
    for c in checks:
        print(f"forward {c['variant']}: descriptor {tuple(c['shape'])}, norms {[round(n, 4) for n in c['norms']]}, "
              f"{c['s_per_image'] * 1000:.0f} ms/image on {device}")
    print("\nshipped models (--checkpoint NAME; Python: spikevimformer.load_pretrained(NAME))")
    for m in shipped:
        also = f" (also: {', '.join(m['aliases'])})" if m["aliases"] else ""
        print(f"  {m['name']}{also}: {m['variant']}, {m['image_size']} px input, {m['descriptor_dim']}-d, "
              f"{m['bytes'] / 2**20:.1f} MiB, sha256 {m['sha256'][:12]}")
        print(f"    {m['summary']}")
    return 0


def shipped_models() -> list[dict]:
    """The releases the package carries, for `info`: name, aliases, shape, input size, file size and hash."""
    from ..pretrained import ALIASES, RELEASES

    return [{"name": r.name, "aliases": [a for a, n in ALIASES.items() if n == r.name], "variant": r.variant,
             "image_size": r.image_size, "descriptor_dim": r.descriptor_dim, "bytes": r.path.stat().st_size,
             "sha256": r.sha256, "summary": r.summary} for r in RELEASES.values()]  # fmt: skip
