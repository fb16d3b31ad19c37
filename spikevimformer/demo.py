"""The main job end to end on the embedded synthetic world: generate, train, evaluate, measure, localize, report."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import file_sha256
from .fileio import atomic_write_json, folder_lock

DEMO_SEED = 2026  # pretraining worlds use seeds >= 10000, so the demo world is never seen in pretraining

DEMO_FILES = ("report.html", "report.json")  # a folder holding these holds a finished demo


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo; the defaults fit 15 minutes on a 2-core CPU."""

    out_dir: str = "runs/demo"
    seed: int = DEMO_SEED
    locations: int = 250
    views: int = 8
    world_image_size: int = 128
    image_size: int = 64
    minutes: float = 5.0  # training budget of each run (fine-tune, and from scratch for comparison): ~11 min in all
    steps: int = 0  # or a budget of exactly this many optimizer steps per run, the cosine annealed over them (0: off)
    epochs: int = 100  # upper bound; the time budget normally ends the run first
    batch_size: int = 32
    lr: float = 1e-4
    scratch_lr: float = 1e-3
    from_scratch: bool = False  # do not start from the shipped pretrained checkpoint
    compare_scratch: bool = True
    device: str = "auto"
    workers: int = 2
    energy_images: int = 16
    strips: int = 6
    localize_queries: int = 200
    localize_image_size: int = 256  # the same world photographed again at this size for registration (0: off)
    other_date_gap: float = 0.5  # and its reference painted at another date (synth --epoch-gap; 0: off)
    other_date_queries: int = 60  # photos localized against it (learned matching costs ~2 s a photo)
    flight_frames: int = 20  # a short synthetic flight through OUT/index, as `spikevimformer flight` (0: off)
    flight_size: int = 256  # its frame size in px
    flight_blank: int = 4  # its frames over featureless water, from the middle on: the filter bridges them
    extra: dict[str, Any] = field(default_factory=dict)

    def budget(self) -> str:
        """Each run's training budget in words, as the summary and the report show it."""
        return f"{self.steps} steps" if self.steps else f"{self.minutes:g} min"

    def train_settings(self, world: Path, run: Path, init: str, lr: float) -> dict[str, Any]:
        """The `train` settings of one run: the budget (minutes or steps) ends it, the rate anneals to zero by then."""
        budget = ({"max_steps": self.steps, "epochs": max(self.epochs, self.steps), "time_limit_min": 0.0,
                   "anneal_by": "steps"} if self.steps  # an epoch holds at least one step: the epochs never bind
                  else {"epochs": self.epochs, "time_limit_min": self.minutes, "anneal_by": "time"})  # fmt: skip
        return {"data_root": str(world), "out_dir": str(run), "image_size": self.image_size,
                "batch_size": self.batch_size, "init": init, "lr": lr, "workers": self.workers, "device": self.device,
                "eval_every_epochs": 0, "final_eval": False, "save_every_steps": 0, "warmup": 0.0,
                "warmup_min_steps": 20, **budget, **self.extra}  # fmt: skip

    @classmethod
    def toy(cls, out_dir: str) -> DemoConfig:
        """Seconds-long settings that run every stage through the same code path (tests, CI)."""
        return cls(out_dir=out_dir, locations=24, views=2, world_image_size=64, image_size=32, minutes=0.05,
                   epochs=1, batch_size=8, workers=0, energy_images=2, strips=2, localize_queries=8,
                   localize_image_size=128, other_date_queries=4, flight_frames=6, flight_size=128, flight_blank=2,
                   steps=2, extra={"hral_k": 3, "hral_k2": 2})


@dataclass
class Stage:
    name: str
    seconds: float = 0.0


class Stages:
    """Wall time of each stage, printed as it ends and kept for the report."""

    def __init__(self) -> None:
        self.done: list[Stage] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        yield
        stage = Stage(name, time.monotonic() - start)
        self.done.append(stage)
        print(f"   {name}: {stage.seconds:.1f} s", flush=True)


def _train(cfg: DemoConfig, world: Path, name: str, init: str, lr: float) -> tuple[Path, dict[str, Any]]:
    from .engine import load_config, train

    run = Path(cfg.out_dir) / name
    settings = cfg.train_settings(world, run, init, lr)
    result = train(load_config(None, settings), progress=sys.stderr.isatty(), overwrite=True)  # a rerun redoes it
    print(f"   {name}: {result['steps']} steps of the {cfg.budget()} budget ({result['stop_reason']})", flush=True)
    return run, result


def _evaluate(model, bench, cfg: DemoConfig, device: torch.device, label: str, flip: bool = False
              ) -> list[dict[str, Any]]:
    from .engine.evaluate import evaluate_sets

    rows = evaluate_sets(model.to(device), bench.test, cfg.image_size, device, protocols=("paper", "official"),
                         workers=cfg.workers, flip=flip, progress=False)
    return [{"model": label, **r} for r in rows]


def _baseline_rows(bench, cfg: DemoConfig) -> list[dict[str, Any]]:
    """Colour-histogram descriptors scored with the same metrics as the models."""
    from .data.images import load_rgb
    from .data.synth.baseline import colour_histogram
    from .metrics import retrieval_metrics

    cache: dict[Path, np.ndarray] = {}

    def describe(paths) -> np.ndarray:
        for p in paths:
            if p not in cache:
                h = colour_histogram(load_rgb(p)).astype(np.float32)
                cache[p] = h / max(float(np.linalg.norm(h)), 1e-12)
        return np.stack([cache[p] for p in paths])

    rows = []
    for direction, (query, gallery) in bench.test.items():
        for protocol in ("paper", "official"):
            m = retrieval_metrics(describe(query.paths), query.labels, describe(gallery.paths), gallery.labels,
                                  protocol=protocol)
            rows.append({"model": "colour histogram (no learning)", "direction": direction, **m})
    return rows


def _energy(model, bench, cfg: DemoConfig, device: torch.device, out: Path) -> dict[str, Any]:
    from .analysis.energy import measure_energy, plot_energy
    from .data import ImageDataset, eval_transform

    query = bench.test["drone2satellite"][0]
    pick = np.linspace(0, len(query) - 1, num=min(cfg.energy_images, len(query))).astype(int)
    data = ImageDataset([query.paths[i] for i in pick], eval_transform(cfg.image_size))
    batches = (torch.stack([data[i][0] for i in chunk]).to(device) for chunk in np.array_split(
        np.arange(len(data)), max(1, len(data) // 8)))
    report = measure_energy(model.to(device).eval(), batches)
    (out / "energy.json").write_text(report.to_json())
    (out / "energy.txt").write_text(report.table() + "\n")
    plot_energy(report, out / "energy.png")
    return report.to_dict()


REGISTRATION_KEYS = ("queries", "fix_rate", "false_fix_rate", "camera_median_error_m", "camera_within_5m",
                     "camera_within_10m", "camera_within_25m", "radius95_coverage", "heading_median_error_deg",
                     "look_at_median_error_m", "look_at_within_5m", "R@1", "R@1_verified", "R@5",
                     "register_s_per_image", "tile_radius95_coverage", "tile_median_radius_m")  # fmt: skip


def _localize(model, world_root: Path, cfg: DemoConfig, out: Path, weights: Path, device: torch.device
              ) -> dict[str, Any]:
    """Index the test gallery, then localize held-out drone photos: the world's own, and the same world
    photographed again at `localize_image_size` (registration needs more pixels than retrieval).

    The indexes name `weights` (the file `model` was loaded from) by its SHA-256 and by a path relative to them, as
    `index build` does, so `localize --index OUT/index` loads it again, and --checkpoint with that file matches."""
    from .data.synth import SynthConfig, generate_world
    from .geo.encoders import TorchEncoder
    from .geo.localize import Localizer
    from .geo.metrics import evaluate_localizer
    from .geo.tiles import world_tiles

    encoder = TorchEncoder(model, cfg.image_size, file_sha256(weights), device, os.path.relpath(weights, out / "index"))
    tiles = world_tiles(world_root, split="test")
    localizer = Localizer(encoder, _gallery_index(encoder, tiles, out / "index"))
    sets = [(f"demo world, {cfg.world_image_size} px photos", world_root)]
    if cfg.localize_image_size and cfg.localize_image_size != cfg.world_image_size:
        again = out / f"world-{cfg.localize_image_size}"
        generate_world(SynthConfig(seed=cfg.seed, locations=cfg.locations, views=cfg.views,
                                   image_size=cfg.localize_image_size), again, workers=1 if cfg.workers == 0 else 2,
                       overwrite=True)  # fmt: skip
        if (again / "locations.csv").read_bytes() != (world_root / "locations.csv").read_bytes():
            raise RuntimeError(f"{again} does not hold the locations of {world_root}")  # pragma: no cover
        sets.append((f"same world, new {cfg.localize_image_size} px photos", again))
    rows, report, chosen = [], {}, []
    for label, root in sets:
        chosen = _queries(root, cfg.localize_queries)
        report = evaluate_localizer(localizer, chosen, progress=False)
        rows.append(_registration_row(label, report))
    if cfg.other_date_gap and len(sets) > 1:
        rows.append(_other_date(encoder, cfg, out))
    report["queries_from"] = sets[-1][0]
    report["registration_rows"] = rows
    report["tiles"] = [[t.latitude, t.longitude] for t in tiles]
    report["picture"] = _registration_picture(localizer, chosen, out)
    return report


def _other_date(encoder, cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """The same photos against a reference painted at another date, indexed as `index build` does (with the
    learned reference features): the registration row that says how the field goes."""
    from .data.synth import SynthConfig, generate_world
    from .geo.localize import Localizer
    from .geo.metrics import evaluate_localizer
    from .geo.tiles import world_tiles

    world = out / f"world-{cfg.localize_image_size}-other-date"
    generate_world(SynthConfig(seed=cfg.seed, locations=cfg.locations, views=cfg.views,
                               image_size=cfg.localize_image_size, epoch_gap=cfg.other_date_gap), world,
                   workers=1 if cfg.workers == 0 else 2, overwrite=True)  # fmt: skip
    index = _gallery_index(encoder, world_tiles(world, split="test"), out / "index-other-date", learned=True)
    report = evaluate_localizer(Localizer(encoder, index), _queries(world, cfg.other_date_queries), progress=False)
    return _registration_row(f"same photos, reference of another date (epoch gap {cfg.other_date_gap:g})", report)


def _gallery_index(encoder, tiles, folder: Path, learned: bool = False):
    """The tiles indexed and saved in `folder`; `learned`: with their learned reference features, as `index
    build` stores them."""
    from .geo import reference_features
    from .geo.encoders import encode_tiles
    from .geo.index import GalleryIndex, IndexConfig

    index = GalleryIndex.create(folder, encoder.identity, IndexConfig(), overwrite=True)
    index.add(tiles, encode_tiles(encoder, tiles))
    if learned:
        reference_features.store(index, tiles)
    index.save()
    return index


def _queries(world: Path, n: int) -> list:
    """At most n of the world's held-out photos, spread evenly over them, with the true camera."""
    from .geo.metrics import load_queries

    queries = load_queries(world, truth="camera")
    return [queries[i] for i in np.linspace(0, len(queries) - 1, num=min(n, len(queries))).astype(int)]


def _registration_row(label: str, report: dict) -> dict[str, Any]:
    return {"queries_from": label, **{k: report[k] for k in REGISTRATION_KEYS if k in report}}


FLIGHT_KEYS = ("frames", "fix_rate", "rejected_fixes", "longest_without_fix", "online_rmse_m", "online_median_error_m",
               "online_max_error_m", "online_radius95_coverage", "smoothed_rmse_m", "smoothed_median_error_m",
               "smoothed_max_error_m", "smoothed_radius95_coverage")  # fmt: skip


def _flight(cfg: DemoConfig, out: Path, device: torch.device) -> dict[str, Any]:
    """A short flight over the test locations flown through OUT/index as `flight` does: the report shows a track."""
    from .data.synth import SynthConfig
    from .data.synth.flight import FlightPlan, render_flight
    from .flight import FlightConfig, flight_metrics, fly, read_frames, write_all
    from .flight.metrics import flight_truth
    from .flight.report import track_figure
    from .geo.localize import open_localizer

    middle = cfg.flight_frames // 2
    plan = FlightPlan(cfg.flight_frames, size=cfg.flight_size,
                      blank=(middle, middle + cfg.flight_blank) if cfg.flight_blank else None)  # fmt: skip
    world = SynthConfig(seed=cfg.seed, locations=cfg.locations, views=cfg.views, image_size=cfg.world_image_size)
    shutil.rmtree(out / "flight", ignore_errors=True)  # an earlier demo's frames would join this flight
    folder = render_flight(world, plan, out / "flight", progress=False)
    truth = flight_truth(folder)
    start = next(iter(truth.by_name.values()))  # the last GNSS position: where the first frame was taken
    flight = fly(open_localizer(str(out / "index"), device=str(device)), read_frames(folder / "frames"),
                 FlightConfig(start=start))  # fmt: skip
    write_all(folder, flight.points, "demo flight", flight.started)
    metrics = flight_metrics(flight.points, truth)
    return {**{k: metrics[k] for k in FLIGHT_KEYS if k in metrics}, "fixes": flight.fixes, "fps": plan.fps,
            "seconds_per_frame": sum(flight.seconds) / len(flight.seconds), "blank": list(plan.blank or ()),
            "command": f"spikevimformer flight {folder / 'frames'} --index {out / 'index'} --start {start[0]:.7f} "
                       f"{start[1]:.7f} --truth {folder}",
            "picture": str(track_figure(flight.points, truth, out / "flight.png"))}  # fmt: skip


def _window_px(frame, inv: np.ndarray, lat_lon) -> np.ndarray:
    """[lat, lon] points -> pixels of a reference window (inverse of its ground affine)."""
    e, n = frame.to_local(*np.asarray(lat_lon, dtype=np.float64).reshape(-1, 2).T)
    return (np.c_[e, n, np.ones(len(e))] @ inv.T)[:, :2]


def _registration_picture(localizer, queries, out: Path) -> str | None:
    """The first query with a camera fix: photo, reference window, inlier lines, footprint, camera and look-at."""
    from .analysis.visualize import registration_figure
    from .geo.imaging import open_photo
    from .geodesy import LocalFrame

    for q in queries:
        (r,) = localizer.localize_files([q.image])
        if not r.fix:
            continue
        photo, _ = open_photo(q.image)
        best = min(r.matches, key=lambda m: m.verified_rank)
        tile = next(t for t in localizer.index.tiles if t.id == best.id)
        query = localizer.registrar.query(photo, r.orientation_deg)
        (reg,) = localizer.registrar.register(query, [localizer.windows.get(tile)])
        plane, window = reg.planes[0], reg.window
        frame = LocalFrame(tile.latitude, tile.longitude)
        inv = np.linalg.inv(np.vstack([window.to_ground, [0.0, 0.0, 1.0]]))
        to_px = functools.partial(_window_px, frame, inv)
        c = r.camera
        return str(registration_figure(
            photo, window.gray, plane.pixels, plane.window_pts, out / "registration.png",
            footprint_px=to_px(r.footprint) if r.footprint else None,
            camera_px=to_px([c["latitude"], c["longitude"]])[0],
            look_at_px=to_px([r.look_at["latitude"], r.look_at["longitude"]])[0],
            title=f"{Path(q.image).name}: {r.inliers} inliers, camera {c['height_m']:.0f} m up, "
                  f"+/- {r.radius_m:.1f} m (95 %)",
        ))  # fmt: skip
    return None


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Every stage of the demo; returns the report payload and writes OUT/report.html.

    Raises ValueError when another process writes OUT (`fileio.folder_lock`)."""
    with folder_lock(cfg.out_dir, "demo"):
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """The stages of `run_demo`, run while this process holds OUT."""
    from .checkpoint import model_from_checkpoint
    from .data import load_benchmark
    from .data.synth import SynthConfig, generate_world
    from .device import resolve_device
    from .pretrained import get_release, load_pretrained
    from .report import write_report

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    device = resolve_device(cfg.device)
    payload: dict[str, Any] = {"config": asdict(cfg), "argv": sys.argv, "versions": _versions(), "device": str(device),
                               "budget": cfg.budget()}  # fmt: skip

    with stages("generate the synthetic world"):
        world = out / "world"
        summary = generate_world(
            SynthConfig(seed=cfg.seed, locations=cfg.locations, views=cfg.views, image_size=cfg.world_image_size),
            world, workers=1 if cfg.workers == 0 else 2, overwrite=True,
        )
        payload["world"] = {"counts": summary.counts, "baseline": summary.baseline, **summary.world}
        bench = load_benchmark(world)

    rows: list[dict[str, Any]] = []
    with stages("non-learned baseline"):
        rows += _baseline_rows(bench, cfg)

    init = "scratch"
    if not cfg.from_scratch:
        with stages("pretrained checkpoint, before fine-tuning"):
            release = get_release("pretrained")
            pretrained = load_pretrained(release.name)  # SHA-256 checked here; training then reads the same file
            init = str(release.path)
            payload["pretrained"] = release.info()
            rows += _evaluate(pretrained, bench, cfg, device, "pretrained (no fine-tuning)")

    runs: dict[str, Path] = {}
    with stages("fine-tune" if init != "scratch" else "train from scratch"):
        label = "fine-tuned from pretrained" if init != "scratch" else "trained from scratch"
        run, result = _train(cfg, world, "finetune" if init != "scratch" else "scratch", init,
                             cfg.lr if init != "scratch" else cfg.scratch_lr)
        runs[label] = run
        weights = run / "best.pt"  # the inference file every run folder holds, which the README points to
        trained = model_from_checkpoint(weights).eval()
        rows += _evaluate(trained, bench, cfg, device, label)
        # University-1652-Baseline's test-time flip, shown apart: it doubles the inference cost
        rows += _evaluate(trained, bench, cfg, device, f"{label}, test-time flip (2x inference)", flip=True)
        payload["training"] = {label: {k: v for k, v in result.items() if k != "metrics"}}

    if init != "scratch" and cfg.compare_scratch:
        with stages(f"train from scratch for the same {'steps' if cfg.steps else 'time'}"):
            run, result = _train(cfg, world, "scratch", "scratch", cfg.scratch_lr)
            runs["trained from scratch"] = run
            rows += _evaluate(model_from_checkpoint(run / "last.pt"), bench, cfg, device, "trained from scratch")
            payload["training"]["trained from scratch"] = {k: v for k, v in result.items() if k != "metrics"}
    payload["metrics"] = rows

    with stages("energy and firing rates"):
        payload["energy"] = _energy(trained, bench, cfg, device, out)

    with stages("geo-referenced index and localization"):
        payload["localization"] = _localize(trained, world, cfg, out, weights, device)

    if cfg.flight_frames:
        with stages("a short flight"):
            payload["flight"] = _flight(cfg, out, device)

    with stages("pictures"):
        payload["pictures"] = _pictures(trained, bench, cfg, device, out, runs)
        if picture := payload["localization"].pop("picture", None):
            payload["pictures"]["registration"] = picture
        if picture := payload.get("flight", {}).pop("picture", None):
            payload["pictures"]["flight"] = picture

    payload["stages"] = [asdict(s) for s in stages.done]
    path = write_report(out / "report.html", payload)
    atomic_write_json(out / "report.json", payload)
    print(f"report: {path}")
    return payload


def _pictures(model, bench, cfg: DemoConfig, device: torch.device, out: Path, runs: dict[str, Path]) -> dict:
    from .analysis.visualize import retrieval_strip, training_curves
    from .engine.evaluate import strip_inputs

    queries, ranked, correct = strip_inputs(model.to(device), bench.test["drone2satellite"], cfg.image_size, device,
                                            cfg.strips, 5, seed=cfg.seed)
    pictures = {"strips": str(retrieval_strip(queries, ranked, correct, out / "strips.png", k=5))}
    for label, run in runs.items():
        pictures[f"curves: {label}"] = str(training_curves(run / "log.csv", out / f"curves-{run.name}.png"))
    return pictures


def _versions() -> dict[str, str]:
    from . import __version__

    versions = {"spikevimformer": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "platform": platform.platform(), "threads": str(torch.get_num_threads())}
    return versions
