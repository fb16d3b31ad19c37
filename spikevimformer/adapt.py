"""`spikevimformer adapt`: an orthophoto of the user's area -> a model fine-tuned on views rendered from it, the
gallery index of the whole orthophoto, and before/after figures on held-out views of the same area."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .fileio import atomic_write_text, folder_lock

EVAL_KEYS = ("R@1", "R@5", "AP", "queries", "gallery")
LOCALIZE_KEYS = ("queries", "fix_rate", "false_fix_rate", "camera_median_error_m", "camera_within_5m",
                 "camera_within_25m", "radius95_coverage", "look_at_median_error_m")  # fmt: skip
TRAIN_TEST_FRACTION = 1e-3  # the renderer wants a test split: one location (the fine-tune does not validate)
HELDOUT_SEED = 1000  # the held-out world's seed offset: other locations, other views
HELDOUT_TEST_FRACTION = 0.8
MAX_NODATA = 0.5  # an area more than half empty (alpha 0 or black) leaves too little to render views from
FEW_STEPS = 20  # the warm-up: a run this short has not moved the weights


@dataclass
class AdaptConfig:
    """One adaptation run: where the area is, how many views to render, and the time budget of the fine-tune."""

    ortho: str
    out_dir: str = "runs/adapt"
    world_file: str | None = None
    crs: str | None = None
    gsd_m: float | None = None  # metres per pixel when there is no world file
    origin: tuple[float, float] | None = None  # (lat, lon) of the north-west corner when there is no world file
    heights: str | None = None  # the surface as a height image aligned with the orthophoto (synth --heights)
    dsm: str | None = None  # or as a DSM GeoTIFF: views cast onto its ground, and the index lifts matches by it
    dsm_units: str | None = None  # 'm' or 'ft' where the DSM's CRS does not say
    init: str = "pretrained"
    minutes: float = 8.0  # the other stages take about 1-2 min on 2 cores for 1 km^2: ~10 min in all
    steps: int = 0  # or a budget of exactly this many optimizer steps, the cosine annealed over them (0: minutes)
    footprint_m: float = 100.0  # tile ground side, also the index's tiles
    locations: int = 480  # training locations, at most as many as fit `spacing_m` apart
    spacing_m: float | None = None  # least distance between training locations; None: a quarter of the footprint
    views: int = 4
    altitudes_m: tuple[float, float] = (70.0, 120.0)  # drone heights above ground, drawn in this range
    pitch_deg: tuple[float, float] = (45.0, 60.0)  # camera depression below the horizon
    fov_deg: float | None = None  # the drone lens; None: one that frames about a tile (synth's coverage rule)
    heldout_locations: int = 30
    render_size: int = 128  # side of the rendered views and tiles
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    localize_queries: int = 60
    extra: dict[str, Any] | None = None

    def train_world(self):
        """The training views: dense, overlapping locations over the whole area."""
        return self._synth(self.seed, self.locations, TRAIN_TEST_FRACTION, self.spacing_m or self.footprint_m / 4)

    def heldout_world(self):
        """The held-out views: another seed, other locations half a tile apart, most of them test queries."""
        return self._synth(self.seed + HELDOUT_SEED, self.heldout_locations, HELDOUT_TEST_FRACTION,
                           self.footprint_m / 2)  # fmt: skip

    def budget(self) -> str:
        """The fine-tune's budget in words, as the stages and the report show it."""
        return f"{self.steps} steps" if self.steps else f"{self.minutes:g} min"

    def fine_tune_settings(self, data_root: Path, out_dir: Path, image_size: int) -> dict[str, Any]:
        """The `train` settings of the fine-tune: the cosine fitted to `minutes` (or `steps`), no validation, saved
        often."""
        budget = ({"epochs": max(1000, self.steps), "max_steps": self.steps, "time_limit_min": 0.0,
                   "anneal_by": "steps"} if self.steps  # an epoch holds at least one step: the epochs never bind
                  else {"epochs": 1000, "time_limit_min": self.minutes, "anneal_by": "time"})  # fmt: skip
        return {"data_root": str(data_root), "out_dir": str(out_dir), "image_size": image_size,
                "batch_size": self.batch_size, "init": self.init, "lr": self.lr, "workers": self.workers,
                "device": self.device, "warmup": 0.0, "warmup_min_steps": 20, "eval_every_epochs": 0,
                "final_eval": False, "save_every_steps": 50, **budget, **(self.extra or {})}  # fmt: skip

    def _synth(self, seed: int, locations: int, test_fraction: float, spacing_m: float):
        from .data.synth import SynthConfig

        return SynthConfig(seed=seed, locations=locations, views=self.views, image_size=self.render_size,
                           footprint_m=self.footprint_m, gsd_m=self.gsd_m, spacing_m=spacing_m,
                           altitudes_m=tuple(self.altitudes_m), pitch_deg=tuple(self.pitch_deg), fov_deg=self.fov_deg,
                           test_fraction=test_fraction, distractor_fraction=0.0, origin=self.origin,
                           ground=self.ortho, world_file=self.world_file, crs=self.crs or "EPSG:4326",
                           heights=self.heights, dsm=self.dsm, dsm_units=self.dsm_units)  # fmt: skip


def adapt(cfg: AdaptConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Render, evaluate before, fine-tune, evaluate after, index the whole orthophoto, localize held-out views.

    Returns the report (also OUT/report.json and OUT/report.html). `resume` continues an interrupted fine-tune
    in OUT/finetune; the worlds and the before figures are reused when present.
    """
    out = Path(cfg.out_dir)
    world_file = _world_file(cfg)
    cfg = _checked(cfg, world_file is not None)  # every setting before anything is written
    _check_area(cfg, world_file)
    with folder_lock(out, "adapt"):  # its renders, fine-tune and index folders inside OUT with it
        return _adapt(cfg, out, world_file, resume, progress)


def _adapt(cfg: AdaptConfig, out: Path, world_file: tuple[str, str] | None, resume: bool,
           progress: bool) -> dict[str, Any]:
    """The stages of `adapt`, run while this process holds OUT."""
    from .analysis.visualize import training_curves
    from .checkpoint import file_sha256, load_model
    from .data import load_benchmark
    from .data.synth import generate_world
    from .device import resolve_device
    from .engine import load_config, train
    from .engine.evaluate import evaluate_sets
    from .geo import reference_features, terrain
    from .geo.encoders import TorchEncoder, encode_tiles
    from .geo.index import GalleryIndex, IndexConfig
    from .geo.localize import Localizer
    from .geo.metrics import evaluate_localizer, load_queries
    from .geo.raster import raster_size
    from .geo.tiles import OrthoConfig, orthophoto_tiles
    from .geodesy import WorldFile
    from .report import write_adapt_report

    cfg = with_world_file(cfg, out, world_file)
    device = resolve_device(cfg.device)
    seconds: dict[str, float] = {}
    report: dict[str, Any] = {"config": asdict(cfg)}

    def stage(name: str):
        print(f"== {name}", flush=True)
        seconds[name] = time.monotonic()

    def done(name: str) -> None:
        seconds[name] = round(time.monotonic() - seconds[name], 1)
        print(f"   {name}: {seconds[name]:.1f} s", flush=True)

    worlds = {"train": (out / "world-train", cfg.train_world()),
              "heldout": (out / "world-heldout", cfg.heldout_world())}
    if resume:
        step = _saved_step(out / "finetune" / "last.pt")
        print(f"resuming in {out}: " + (f"fine-tune from step {step}, " if step else "nothing fine-tuned yet, ")
              + "rendered views reused where complete")  # fmt: skip
    for name, (folder, synth) in worlds.items():
        if resume and (folder / "world.json").is_file():
            continue
        stage(f"render {name} views")
        summary = generate_world(synth, folder, workers=cfg.workers or 1, overwrite=True, progress=progress)
        for note in summary.notes:
            if any(words in note for words in ("nodata", "locations fit", "no world file or origin")):
                print(f"   {note}")
        done(f"render {name} views")
    trained_on = len(load_benchmark(worlds["train"][0]).train.classes)
    if cfg.batch_size > trained_on:  # fewer locations fitted the area than asked for
        print(f"   batch size {cfg.batch_size} cut to the {trained_on} training locations rendered")
        cfg = replace(cfg, batch_size=trained_on)
    heldout = load_benchmark(worlds["heldout"][0])
    pairs = {"drone2satellite": heldout.test["drone2satellite"]}

    def scores(model) -> dict[str, Any]:
        rows = evaluate_sets(model.to(device), pairs, image_size, device, protocols=("paper",),
                             workers=min(cfg.workers, 2), progress=False)  # fmt: skip
        return {k: rows[0][k] for k in EVAL_KEYS}

    base, _ = load_model(cfg.init)
    image_size = base.image_size or 64
    stage("held-out views, before adaptation")
    report["before"] = scores(base)
    done("held-out views, before adaptation")

    stage(f"fine-tune for {cfg.budget()}")
    run = out / "finetune"
    settings = cfg.fine_tune_settings(worlds["train"][0], run, image_size)
    resumable = resume and (run / "last.pt").is_file()
    result = train(load_config(None, settings), resume=run if resumable else None, progress=progress,
                   overwrite=not resumable, resume_hint="the same adapt command with --resume")  # fmt: skip
    done(f"fine-tune for {cfg.budget()}")
    tuned, tag = load_model(run / "last.pt")
    stage("held-out views, after adaptation")
    report["after"] = scores(tuned)
    done("held-out views, after adaptation")

    stage("gallery index of the whole orthophoto")
    # the weights named relative to the index, so OUT can be moved or copied whole and still localize
    encoder = TorchEncoder(tuned, image_size, file_sha256(run / "last.pt"), device, "../finetune/last.pt")
    # without a world file (--gsd), the renderer's own geo-referenced copy of the area is indexed
    ortho, world = (cfg.ortho, cfg.world_file) if cfg.world_file else (worlds["train"][0] / "ortho.jpg", None)
    tiles = orthophoto_tiles(ortho, OrthoConfig(cfg.footprint_m, cfg.footprint_m / 2, crs=cfg.crs if world else None),
                             world)  # fmt: skip
    index = GalleryIndex.create(out / "index", encoder.identity, IndexConfig(), overwrite=True)
    index.add(tiles, encode_tiles(encoder, tiles, progress=progress))
    reference_features.store(index, tiles)  # the learned matcher's side of each tile, as index build stores it
    index.save()
    if cfg.dsm:  # world is set: a DSM needs the area's georeference (_checked)
        terrain.store(index.folder, [terrain.resample_dsm(cfg.dsm, ortho, WorldFile.read(world), cfg.crs,
                                                          raster_size(ortho), cfg.dsm_units)])  # fmt: skip
    done("gallery index of the whole orthophoto")

    stage("localize held-out views")
    queries = load_queries(worlds["heldout"][0], truth="camera")[: cfg.localize_queries]
    located = evaluate_localizer(Localizer(encoder, index), queries, progress=progress)
    report["localization"] = {k: located[k] for k in LOCALIZE_KEYS if k in located}
    done("localize held-out views")

    report.update(steps=result.get("steps"), budget=cfg.budget(), training_locations=trained_on, tiles=len(tiles),
                  seconds=seconds, weights_tag=tag, commands=usage(out))  # fmt: skip
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str))
    curves = training_curves(run / "log.csv", out / "curves-finetune.png") if report["steps"] else None
    write_adapt_report(out / "report.html", report, curves, few_steps=FEW_STEPS)
    return report


def with_world_file(cfg: AdaptConfig, out: Path, world_file: tuple[str, str] | None) -> AdaptConfig:
    """`cfg` reading the area's georeference from OUT/area.wld (a GeoTIFF's tags become a world file for the
    renderer); unchanged without one (--gsd)."""
    if world_file is None:
        return cfg
    atomic_write_text(out / "area.wld", world_file[0])
    return replace(cfg, world_file=str(out / "area.wld"), crs=world_file[1])


def _saved_step(path: Path) -> int | None:
    """The step an interrupted fine-tune saved at, or None when nothing was saved."""
    import torch

    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(payload["train_state"]["progress"]["step"])
    except Exception:  # torch.load raises many types for a damaged file; the trainer reports those itself
        return None


def _world_file(cfg: AdaptConfig) -> tuple[str, str] | None:
    """(world file text, CRS) of the area, from a world file beside it or a GeoTIFF's tags; None with --gsd;
    neither is an error naming the flags."""
    from .geo.raster import raster_size
    from .geo.tiles import georeference

    if cfg.gsd_m is not None and cfg.world_file is None:
        return None
    try:
        world, crs = georeference(cfg.ortho, cfg.crs, cfg.world_file)
    except FileNotFoundError:
        raster_size(cfg.ortho)  # a file that is no image says so, not that it lacks a georeference
        raise ValueError(f"{cfg.ortho} has no georeference (no world file beside it, no GeoTIFF tags): pass "
                         "--world-file FILE (and --crs), or --gsd M/px (and --origin LAT LON)") from None
    return "\n".join(repr(float(v)) for v in (world.a, world.d, world.b, world.e, world.c, world.f)) + "\n", crs


def _checked(cfg: AdaptConfig, georeferenced: bool) -> AdaptConfig:
    """Refuse settings no run can use, in adapt's own flag names, before any work; a batch larger than the
    training locations is cut to them (a batch holds each location once)."""
    if cfg.steps < 0:
        raise ValueError(f"--steps must be at least 1, got {cfg.steps}")
    if cfg.minutes <= 0 and not cfg.steps:
        raise ValueError(f"--minutes must be positive, got {cfg.minutes:g}")
    if cfg.footprint_m <= 0:
        raise ValueError(f"--footprint-m must be positive metres, got {cfg.footprint_m:g}")
    if cfg.spacing_m is not None and not cfg.footprint_m / 16 <= cfg.spacing_m < math.inf:
        raise ValueError(f"--spacing-m must be at least {cfg.footprint_m / 16:g} m (a sixteenth of --footprint-m: "
                         f"closer views repeat each other) and finite, got {cfg.spacing_m:g}")  # fmt: skip
    if cfg.gsd_m is not None and not 0 < cfg.gsd_m < math.inf:
        raise ValueError(f"--gsd must be positive metres per pixel, got {cfg.gsd_m:g}")
    if cfg.origin is not None and not (-90 <= cfg.origin[0] <= 90 and -180 <= cfg.origin[1] <= 180):
        raise ValueError(f"--origin {cfg.origin[0]:g} {cfg.origin[1]:g}: latitude must lie in [-90, 90] and "
                         "longitude in [-180, 180]")  # fmt: skip
    if cfg.dsm and not georeferenced:
        raise ValueError("--dsm lies on the area's georeference, and this orthophoto has none: give it a world file "
                         "or GeoTIFF tags instead of --gsd")  # fmt: skip
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size must be at least 2, got {cfg.batch_size}")
    probe = replace(cfg, world_file=cfg.world_file or "area.wld") if georeferenced else cfg
    train_locations = probe.train_world().resolved().split_counts()[0]
    probe.heldout_world().resolved()
    if cfg.batch_size > train_locations:
        print(f"batch of {train_locations} pairs: --locations {cfg.locations} leaves {train_locations} for "
              f"training (a batch holds each location once)", flush=True)  # fmt: skip
        cfg = replace(cfg, batch_size=train_locations)
    return cfg


def _check_area(cfg: AdaptConfig, world_file: tuple[str, str] | None) -> None:
    """Refuse areas too small for four tiles, or mostly nodata, in one line with the figures."""
    from .geo import terrain
    from .geo.raster import empty_overview, raster_size
    from .geo.tiles import OrthoConfig, orthophoto_tiles
    from .geodesy import WorldFile

    if world_file is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "area.wld").write_text(world_file[0])
            try:
                tiles = orthophoto_tiles(cfg.ortho, OrthoConfig(cfg.footprint_m, cfg.footprint_m, crs=world_file[1],
                                                                 max_nodata=1.0),
                                         Path(tmp) / "area.wld")  # fmt: skip
            except ValueError as exc:
                if "do not fit" not in str(exc):
                    raise
                tiles = []
            if cfg.dsm:  # a DSM that does not fit the area is refused before anything renders
                terrain.resample_dsm(cfg.dsm, cfg.ortho, WorldFile.read(Path(tmp) / "area.wld"), world_file[1],
                                     raster_size(cfg.ortho), cfg.dsm_units)  # fmt: skip
        if not _holds_two_by_two(tiles):
            size = _ground_size(tiles)
            raise ValueError(f"{cfg.ortho} ({size}) holds fewer than 2 x 2 tiles of {cfg.footprint_m:g} m side by "
                             "side: give a larger area or a smaller --footprint-m")  # fmt: skip
    empty = empty_overview(cfg.ortho)
    if empty.mean() > MAX_NODATA:
        raise ValueError(f"{cfg.ortho} is {100 * empty.mean():.0f} % nodata (transparent or black), more than "
                         f"{100 * MAX_NODATA:.0f} %: crop it to the imaged area")  # fmt: skip


def _holds_two_by_two(tiles) -> bool:
    """Whether the footprint-strided tiles include two that sit side by side, without overlap, in each direction."""
    if len(tiles) < 4:
        return False
    w, h = tiles[0].box[2] - tiles[0].box[0], tiles[0].box[3] - tiles[0].box[1]
    lefts, tops = [t.box[0] for t in tiles], [t.box[1] for t in tiles]
    return max(lefts) - min(lefts) >= w and max(tops) - min(tops) >= h


def _ground_size(tiles) -> str:
    """'about W x H m' of the area the tiles cover, or 'smaller than one tile' when none fit."""
    if not tiles:
        return "smaller than one tile"
    metres = tiles[0].footprint_m / (tiles[0].box[2] - tiles[0].box[0])
    width = max(t.box[2] for t in tiles) - min(t.box[0] for t in tiles)
    height = max(t.box[3] for t in tiles) - min(t.box[1] for t in tiles)
    return f"about {width * metres:.0f} x {height * metres:.0f} m"


def lens_of(photo: str | Path) -> float:
    """The horizontal field of view (degrees) of a sample drone photo, from its EXIF focal length (`--like`)."""
    from .geo.imaging import open_photo
    from .geo.intrinsics import from_exif, lens_gap

    image, exif = open_photo(photo)
    found = from_exif(exif, *image.size, label=str(photo))
    if found is None:
        raise ValueError(f"--like {photo}: {lens_gap(exif)}; give the lens with --fov DEG instead")
    return found.hfov_deg


def usage(out: Path) -> list[str]:
    """The commands that use the result."""
    return [f"spikevimformer localize PHOTO.jpg --index {out / 'index'}",
            f"spikevimformer serve --index {out / 'index'} --port 8000"]  # fmt: skip


def summary(report: dict[str, Any]) -> str:
    """The before/after table and the localization line, as printed at the end of `adapt`."""
    b, a = report["before"], report["after"]
    lines = [f"{'held-out D->S':<16}{'R@1':>8}{'R@5':>8}{'AP':>8}",
             f"{'before':<16}{b['R@1']:>8.1f}{b['R@5']:>8.1f}{b['AP']:>8.1f}",
             f"{'after':<16}{a['R@1']:>8.1f}{a['R@5']:>8.1f}{a['AP']:>8.1f}",
             f"change: R@1 {a['R@1'] - b['R@1']:+.1f} points ({b['queries']} queries, {b['gallery']} tiles)"]
    steps = report.get("steps") or 0
    few = " - too few for a real adaptation (the change above is mostly chance): raise --minutes or --steps"
    budget = f" (budget {report['budget']})" if report.get("budget") else ""
    lines.append(f"fine-tuned for {steps} step{'' if steps == 1 else 's'}{budget}" + (few if steps < FEW_STEPS else ""))
    loc = report.get("localization", {})
    if "fix_rate" in loc:
        med = loc.get("camera_median_error_m")
        lines.append(f"localization of {loc['queries']} held-out views on the whole-area index: fix "
                     f"{100 * loc['fix_rate']:.1f} %, camera median error "
                     f"{'-' if med is None else f'{med:.2f} m'}, within 25 m {100 * loc['camera_within_25m']:.1f} %")
    return "\n".join(lines + ["use it:", *(f"  {c}" for c in report["commands"])])
