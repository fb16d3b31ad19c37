"""`spikevimformer energy`: per-layer spike rates, SOPs and energy of the backbone on real or random images, priced
under the four conventions of `analysis.conventions`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ..analysis.complexity import ATTENTION_ORDERS
from ..analysis.energy import measure_energy, plot_energy
from ..data.images import load_rgb, spread_images
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from ..fileio import atomic_write_text, refuse_overwrite
from ..metrics import save_report
from .common import add_device, add_image_size, add_model, add_overwrite, load_model, resolve_device


def image_batches(paths: list[Path], size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Images prepared exactly as inference prepares them (`eval_transform`)."""
    transform = eval_transform(size)
    for start in range(0, len(paths), batch_size):
        yield torch.stack([transform(load_rgb(p)) for p in paths[start : start + batch_size]])


def random_batches(count: int, size: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Uniform-noise RGB images, normalised like real ones (a fallback without data: rates are not representative)."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        yield (torch.rand(n, 3, size, size, generator=gen) - mean) / std


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("energy", help="per-layer spike rates, SOPs and SNN vs ANN energy of the backbone, priced "
                                      "under four conventions (paper-45nm-fp32, int8, memory-aware, binary-spikes)")
    add_model(p)
    p.add_argument("--images", type=Path, help="folder of images (searched recursively); default: random images")
    p.add_argument("--num-images", type=int, default=16, help="images to measure on (spread over the folder)")
    p.add_argument("--batch-size", type=int, default=4)
    add_image_size(p)
    p.add_argument("--attention-order", choices=ATTENTION_ORDERS, default="q(ktv)",
                   help="order of the attention products priced (the model computes Q(K^T V))")
    p.add_argument("--seed", type=int, default=0, help="seed of the random images")
    add_device(p)
    p.add_argument("--out", type=Path, required=True, help="folder for energy.json, energy.txt, energy.png")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.num_images < 1 or args.batch_size < 1:
        raise ValueError("--num-images and --batch-size must be at least 1")
    refuse_overwrite([args.out / name for name in ("energy.json", "energy.txt", "energy.png")], args.overwrite)
    device = resolve_device(args.device)
    model, source = load_model(args)
    model.to(device)
    if args.images:
        paths = spread_images(args.images, args.num_images, "--images")
        batches = image_batches(paths, args.image_size, args.batch_size)
        data = f"{len(paths)} images from {args.images}"
    else:
        batches = random_batches(args.num_images, args.image_size, args.batch_size, args.seed)
        data = f"{args.num_images} random image{'s' if args.num_images > 1 else ''} (seed {args.seed})"
    start = time.perf_counter()
    report = measure_energy(model, batches, attention_order=args.attention_order, progress=True)
    report.config.update(model=source, data=data, variant=model.variant,
                         device=str(device), seconds=round(time.perf_counter() - start, 2))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    table = f"model: {source}\ndata: {data}\n\n{report.table()}\n"
    json_path = save_report(out / "energy.json", report.to_dict())
    txt_path = atomic_write_text(out / "energy.txt", table)
    png_path = plot_energy(report, out / "energy.png")
    t = report.totals
    print(f"model: {source}; data: {data}; {args.image_size} px; attention order {args.attention_order}")
    print(f"MACs {t['macs'] / 1e9:.3f} G ({t['macs_other_order'] / 1e9:.3f} G in {t['other_order']} order), "
          f"stem {t['macs_stem'] / 1e9:.3f} G; SOPs {t['sops'] / 1e9:.3f} G; "
          f"mean input spike count {t['mean_rate']:.4f}")
    print(f"SNN {t['snn_energy_mj']:.4f} mJ vs ANN {t['ann_energy_mj']:.4f} mJ per image: {t['ann_over_snn']:.2f}x")
    for priced in report.conventions.values():
        print(priced.verdict)
    params = report.parameters
    print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items() if v is not None))
    print(f"wrote {txt_path}, {json_path}, {png_path}")
    return 0
