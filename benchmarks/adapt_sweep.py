"""adapt's fine-tune at a fixed step count, for comparing settings on one area: renders the training views
(cached per setting), fine-tunes the shipped model for --steps steps, and prints held-out D->S R@1/R@5/AP on two
held-out worlds: adapt's own (30 locations, its seed) and a larger one of another seed (90 locations). A fixed step
count makes runs comparable even when the CPU is shared; `adapt --minutes` spends a time budget instead.

    python benchmarks/adapt_sweep.py --ortho data/area-03/ortho.jpg                       # today's defaults
    python benchmarks/adapt_sweep.py --ortho data/area-03/ortho.jpg --locations 120 --spacing-m 50
    python benchmarks/adapt_sweep.py --ortho area.tif --image-size 96 --lr 3e-4 --before
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import yaml

from spikevimformer.adapt import EVAL_KEYS, HELDOUT_SEED, AdaptConfig, _world_file, with_world_file


def main() -> None:
    d = AdaptConfig(ortho="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ortho", required=True, help="the area, as for adapt (a GeoTIFF or an image + world file)")
    parser.add_argument("--crs", help="the world file's coordinate system, as for adapt")
    parser.add_argument("--cache", default="runs/adapt-sweep",
                        help="rendered worlds and runs, one folder per area (default %(default)s)")
    parser.add_argument("--locations", type=int, default=d.locations)
    parser.add_argument("--spacing-m", type=float, default=None, help="default: a quarter of the footprint")
    parser.add_argument("--views", type=int, default=d.views)
    parser.add_argument("--steps", type=int, default=300, help="fine-tune steps (default 300: ~8 min on 2 cores)")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--image-size", type=int, default=0, help="model input (default: the shipped model's)")
    parser.add_argument("--before", action="store_true", help="also score the shipped model")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more train settings (TrainConfig fields), e.g. w_shs=0")
    args = parser.parse_args()

    from spikevimformer.checkpoint import load_model
    from spikevimformer.data import load_benchmark
    from spikevimformer.data.synth import generate_world
    from spikevimformer.engine import load_config, train
    from spikevimformer.engine.evaluate import evaluate_sets

    cache = Path(args.cache)
    cfg = AdaptConfig(ortho=args.ortho, crs=args.crs, locations=args.locations, spacing_m=args.spacing_m,
                      views=args.views, lr=args.lr, batch_size=args.batch_size)  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    cfg = with_world_file(cfg, cache, _world_file(cfg))

    def world(name: str, synth) -> Path:
        folder = cache / name
        if not (folder / "world.json").is_file():
            generate_world(synth, folder, workers=2, overwrite=True, progress=False)
        return folder

    spacing = args.spacing_m or cfg.footprint_m / 4
    train_root = world(f"train-L{args.locations}-sp{spacing:g}-V{args.views}", cfg.train_world())
    held = replace(cfg, views=d.views)  # the same held-out views whatever --views trains on
    heldout = {"adapt's held-out (30 locations)": world("heldout-30", held.heldout_world()),
               "another seed (90 locations)": world("heldout-90", replace(held, seed=HELDOUT_SEED,
                                                                          heldout_locations=90).heldout_world())}
    base, _ = load_model("pretrained")
    size = args.image_size or base.image_size

    def scores(model) -> dict:
        out = {}
        for name, folder in heldout.items():
            pairs = {"drone2satellite": load_benchmark(folder).test["drone2satellite"]}
            row = evaluate_sets(model, pairs, size, "cpu", protocols=("paper",), workers=2, progress=False)[0]
            out[name] = {k: row[k] for k in EVAL_KEYS}
        return out

    tag = f"L{args.locations}-sp{spacing:g}-V{args.views}-s{args.steps}-lr{args.lr:g}-b{args.batch_size}-px{size}"
    extra = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    tag += "".join(f"-{key}{value}" for key, value in extra.items())
    settings = cfg.fine_tune_settings(train_root, cache / "runs" / tag, size) | {
        "device": "cpu", "time_limit_min": 0.0, "max_steps": args.steps, "anneal_by": "steps", **extra}
    start = time.monotonic()
    result = train(load_config(None, settings), progress=False, overwrite=True)
    seconds = time.monotonic() - start
    tuned, _ = load_model(cache / "runs" / tag / "last.pt")
    rows = {"after": scores(tuned)} | ({"before": scores(base)} if args.before else {})
    trained = len(load_benchmark(train_root).train.classes)
    print(f"\n{tag}: {trained} training locations, {result['steps']} steps in {seconds / 60:.1f} min")
    print(f"{'held-out D->S':<34}{'':<8}{'R@1':>7}{'R@5':>7}{'AP':>7}  queries/tiles")
    for when, by_world in rows.items():
        for name, r in by_world.items():
            print(f"{name:<34}{when:<8}{r['R@1']:>7.1f}{r['R@5']:>7.1f}{r['AP']:>7.1f}  {r['queries']}/{r['gallery']}")
    print(json.dumps({"tag": tag, "training_locations": trained, "steps": result["steps"], **rows}))


if __name__ == "__main__":
    main()
