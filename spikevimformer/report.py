"""A self-contained HTML report of a demo run: tables, pictures embedded as data URIs, commands, timings."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .fileio import atomic_write_text
from .geo.metrics import is_fraction, metric_name

SECTIONS = ("Summary", "Retrieval", "Training curves", "Retrieval strips", "Energy", "Localization", "Flight",
            "Commands and versions", "Stage times")
ENERGY_COLUMNS = ("macs", "macs_stem", "sops", "mean_rate", "snn_energy_mj", "ann_energy_mj", "ann_over_snn")
CONVENTION_TOTALS = {"snn_mj": "SNN mJ", "snn_compute_mj": "compute mJ", "snn_neurons_mj": "neuron updates mJ",
                     "snn_memory_mj": "memory mJ", "snn_integer_as_one_op_mj": "SNN, integer spike as one op mJ",
                     "ann_mj": "ANN same shape mJ"}  # fmt: skip
LOCALIZATION_COLUMNS = ("queries", "gallery", "R@1", "Dis@1_m", "Dis@5_m", "SDM@5", "within_25m", "within_50m",
                        "within_100m", "tile_estimate_median_error_m", "model_ms_per_image", "backend")
REGISTRATION_COLUMNS = ("queries_from", "fix_rate", "false_fix_rate", "camera_median_error_m", "camera_within_5m",
                        "camera_within_10m", "camera_within_25m", "radius95_coverage", "heading_median_error_deg",
                        "look_at_median_error_m", "look_at_within_5m", "R@1", "R@1_verified", "register_s_per_image",
                        "tile_radius95_coverage", "tile_median_radius_m")  # fmt: skip
FLIGHT_COLUMNS = ("frames", "fixes", "fix_rate", "rejected_fixes", "longest_without_fix", "online_rmse_m",
                  "online_median_error_m", "online_max_error_m", "online_radius95_coverage", "smoothed_rmse_m",
                  "smoothed_median_error_m", "smoothed_max_error_m", "smoothed_radius95_coverage",
                  "seconds_per_frame")  # fmt: skip
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
         "text-align:right;overflow-wrap:anywhere}th{background:#f3f3f3}img{max-width:100%}"
         "pre{background:#f6f6f6;padding:8px}")
METRIC_COLUMNS = ("model", "direction", "protocol", "R@1", "R@5", "R@10", "R@top1%", "AP", "queries", "gallery")


def _esc(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _cell(column: str, value: Any, percent: bool) -> str:
    if percent and is_fraction(column) and _number(value):
        return f"{100 * value:.1f}\u00a0%"
    return _esc(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str], percent: bool = False,
           spaced: bool = False) -> str:  # fmt: skip
    """A table that scrolls sideways inside the page when wider than it. `percent`: the rows hold fractions of one
    (R@K, within X m, rates), shown as percentages as in the report's other tables; `spaced`: headers with spaces
    for underscores, so that a wide table wraps its headers instead of the page."""
    head = "".join(f"<th>{_esc(c.replace('_', ' ') if spaced else c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c, r.get(c, ''), percent)}</td>" for c in columns) + "</tr>"
                   for r in rows)  # fmt: skip
    return f'<div style="overflow-x:auto"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _registration_table(rows: list[dict[str, Any]]) -> str:
    """One row per query set; a missing metric (no fixes, no true heading) left blank."""
    shown = [{c: v for c, v in row.items() if v is not None} for row in rows]
    return _table(shown, REGISTRATION_COLUMNS, percent=True, spaced=True)


def _conventions_section(energy: dict[str, Any]) -> str:
    """The same measured spikes priced under each convention (mJ per image, ratios ANN/SNN), what each convention
    assumes, the paper's claim and one verdict per convention."""
    rows = []
    for name, priced in energy["conventions"].items():
        t = priced["totals"]
        row = {"convention": name, **{label: f"{t[k]:.4f}" for k, label in CONVENTION_TOTALS.items() if k in t},
               "ANN/SNN": f"{t['ann_over_snn']:.2f}x"}  # fmt: skip
        for ref in priced["references"]:
            bound = "\u2265" if ref["lower_bound"] else ""  # a lower bound: weight reads only
            row[f"{ref['name']} mJ"] = f"{bound}{ref['energy_mj']:.4f}"
            row[f"{ref['name']} ANN/SNN"] = f"{bound}{ref['ann_over_snn']:.2f}x"
        rows.append(row)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    described = "".join(f"<li><b>{_esc(name)}</b>: {_esc(p['convention']['description'])}</li>"
                        for name, p in energy["conventions"].items())  # fmt: skip
    claim = energy.get("claim", {})
    ratios = ", ".join(f"{_esc(k)} {v:.2f}x" for k, v in claim.get("parameter_ratios", {}).items())
    verdicts = "".join(f"<li>{_esc(p['verdict'])}</li>" for p in energy["conventions"].values())
    return (
        "<h3>The same spikes under four conventions</h3><p>mJ per image; SNN = compute + neuron updates + memory; "
        "ANN: the same network as an ANN; reference ANNs by their published MACs scaled by (size/224)^2; "
        "\u2265: a lower bound (weight reads only).</p>"
        f'{_table(rows, columns)}<ul>{described}</ul>'
        f"<p>Paper's claim: {_esc(claim.get('source', ''))}. Measured parameter ratios (reference / our inference "
        f"backbone): {ratios}.</p><ul>{verdicts}</ul>"
    )


def _image(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _localization_map(report: dict[str, Any], out_png: Path) -> Path:
    """Gallery tile centres, true drone positions and estimates joined by their error, in metres."""
    from .analysis.visualize import _pyplot, save_figure
    from .geodesy import LocalFrame

    plt = _pyplot()
    tiles = report["tiles"]
    frame = LocalFrame(*tiles[0])
    tx, ty = zip(*(frame.to_local(lat, lon) for lat, lon in tiles), strict=True)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(tx, ty, s=14, marker="s", color="#999", label="gallery tiles")
    for i, p in enumerate(report["points"]):
        x0, y0 = frame.to_local(*p["true"])
        x1, y1 = frame.to_local(*p["estimate"])
        ax.plot([x0, x1], [y0, y1], color="#d33", lw=0.6, alpha=0.6)
        ax.scatter([x0], [y0], s=10, color="#1565c0", label="drone (true)" if i == 0 else None)
        ax.scatter([x1], [y1], s=10, color="#d33", label="estimate" if i == 0 else None)
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_aspect("equal")
    ax.legend(loc="best")
    ax.set_title("localization of held-out drone photos")
    return save_figure(fig, out_png)


def write_report(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write report.html (atomically) with every section; pictures are embedded, so the file stands alone."""
    path = Path(path)
    out = path.parent
    parts: list[str] = []

    world = payload.get("world", {})
    counts = world.get("counts", {})
    best = [r for r in payload.get("metrics", []) if r.get("direction") == "drone2satellite"
            and r.get("protocol") == "paper"]
    parts.append("<h2>Summary</h2>")
    parts.append(f"<p>Synthetic world (seed {_esc(payload['config']['seed'])}): {_esc(counts.get('train'))} training, "
                 f"{_esc(counts.get('test'))} test and {_esc(counts.get('distractor'))} distractor locations, "
                 f"{_esc(counts.get('drone_views_rendered'))} drone views. Device {_esc(payload.get('device'))}; "
                 f"models see {_esc(payload['config']['image_size'])} px images. Drone -> satellite, paper "
                 "protocol:</p>")
    parts.append(_table(best, ("model", "R@1", "R@5", "AP", "queries", "gallery")))

    parts.append("<h2>Retrieval</h2><p>Both directions under both gallery protocols (<b>paper</b>: gallery "
                 "locations absent from the queries removed; <b>official</b>: the whole gallery, distractors "
                 "included). AP: published trapezoidal convention.</p>")
    parts.append(_table(payload.get("metrics", []), METRIC_COLUMNS))

    pictures = payload.get("pictures", {})
    parts.append("<h2>Training curves</h2>")
    if payload.get("training"):
        taken = "; ".join(f"{_esc(label)}: {_esc(run.get('steps'))} steps ({_esc(run.get('stop_reason'))})"
                          for label, run in payload["training"].items())  # fmt: skip
        parts.append(f"<p>Training budget of each run: {_esc(payload.get('budget', ''))}. Steps taken: {taken}. "
                     "The spread_* panels are each branch's batch spread (0: its output no longer depends on its "
                     "input).</p>")
    for name, png in pictures.items():
        if name.startswith("curves"):
            parts.append(f"<h3>{_esc(name)}</h3>{_image(png, name)}")
    parts.append("<h2>Retrieval strips</h2><p>Drone queries (blue) and their top-5 satellite tiles: "
                 "green = the right location, red = wrong.</p>")
    if "strips" in pictures:
        parts.append(_image(pictures["strips"], "retrieval strips"))

    energy = payload.get("energy", {})
    parts.append("<h2>Energy</h2>")
    if energy:
        totals = energy.get("totals", {})
        parts.append("<p>Inference energy per image of the backbone under the paper's convention (45 nm: 4.6 pJ "
                     "per MAC for the stem, 0.9 pJ per accumulate times the measured spike rate elsewhere) against "
                     "an ANN of the same shape (every MAC at 4.6 pJ).</p>")
        parts.append(_table([totals], ENERGY_COLUMNS))
        if energy.get("conventions"):
            parts.append(_conventions_section(energy))
        if (out / "energy.png").exists():
            parts.append(_image(out / "energy.png", "energy per convention and per block"))

    loc = payload.get("localization", {})
    parts.append("<h2>Localization</h2>")
    if loc:
        parts.append("<p>Held-out drone photos localized against a geo-referenced index of the test gallery "
                     "tiles; errors against the drone camera's true position. Dis@K: distance of the best of "
                     "the top K tiles; within X m: top-1 tile centre within X metres.</p>")
        named = {c: metric_name(c, loc) for c in LOCALIZATION_COLUMNS}  # SDM@K with its scale
        parts.append(_table([{named[c]: v for c, v in loc.items() if c in named}], list(named.values()),
                            percent=True))
        if loc.get("points"):
            parts.append(_image(_localization_map(loc, out / "localization.png"), "localization map"))
        registration = loc.get("registration_rows") or (
            [{"queries_from": loc.get("queries_from", "demo world"), **loc}] if "fix_rate" in loc else [])
        if registration:
            parts.append("<h3>Camera position by registration</h3><p>Each photo is registered to the orthophoto "
                         "around its top-k tiles and the camera pose solved from the inliers of the best. fix rate: "
                         "photos with a camera fix; false fix: a fix farther than 25 m from the truth; camera error "
                         "and within X m over all photos (a photo without a fix counts with its tile-level "
                         "estimate); 95 % radius coverage: fixes whose stated radius holds the true camera; R@1 "
                         "verified: top-1 after re-ranking the candidates by inliers; registration seconds per "
                         "photo; tile radius coverage: photos without a fix whose tile-level radius (calibrated, "
                         "scripts/calibrate_fallback.py) holds the camera. The row of another date registers the "
                         "same photos to a reference painted at another date (synth --epoch-gap), as in the "
                         "field.</p>")
            parts.append(_registration_table(registration))
    if pictures.get("registration") and Path(pictures["registration"]).is_file():
        parts.append("<p>One registration: the photo (left) and the reference window (right, grey), inlier "
                     "matches joined; on the window the photo's ground footprint, its look-at point and the "
                     "camera.</p>")
        parts.append(_image(pictures["registration"], "registration of a drone photo to the orthophoto"))

    flight = payload.get("flight", {})
    parts.append("<h2>Flight</h2>")
    if flight:
        water = (f"; frames {flight['blank'][0]}-{flight['blank'][1] - 1} fly over featureless water"
                 if flight.get("blank") else "")  # fmt: skip
        parts.append(f"<p>A short synthetic flight over the test locations ({_esc(flight['frames'])} frames, "
                     f"{flight['fps']:g} a second{water}) from its first position (the last GNSS fix, --start), each "
                     "frame localized against the index above and its camera fix fused by the Kalman filter, as "
                     "<code>spikevimformer flight</code> does it: online (each frame from the frames before it) and "
                     "smoothed (the whole flight) errors in metres against the true camera, the longest stretch of "
                     "frames without a fix, and how often the 95 % radius holds the camera.</p>"
                     f"<pre>{_esc(flight.get('command', ''))}</pre>")
        parts.append(_table([flight], FLIGHT_COLUMNS, percent=True, spaced=True))
    if pictures.get("flight") and Path(pictures["flight"]).is_file():
        parts.append(_image(pictures["flight"], "flight track and per-frame error"))

    parts.append("<h2>Commands and versions</h2>")
    parts.append(f"<pre>{_esc(' '.join(payload.get('argv', [])))}</pre>")
    parts.append(_table([payload.get("versions", {})], list(payload.get("versions", {}))))
    if payload.get("pretrained"):
        info = payload["pretrained"]
        parts.append(f"<p>Pretrained checkpoint SHA-256 <code>{_esc(info.get('sha256'))}</code>, made by "
                     f"<code>{_esc(info.get('command'))}</code>.</p>")
    parts.append("<h2>Stage times</h2>")
    stages = payload.get("stages", [])
    parts.append(_table(stages + [{"name": "total", "seconds": sum(s["seconds"] for s in stages)}],
                        ("name", "seconds")))

    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>SpikeViMFormer demo</title>"
           f"<style>{STYLE}</style></head><body><h1>SpikeViMFormer demo report</h1>{''.join(parts)}</body></html>")
    return atomic_write_text(path, doc)


ADAPT_STEPS_NOTE = "too few steps for a real adaptation (the change is mostly chance): raise --minutes or --steps"


def write_adapt_report(path: str | Path, report: dict[str, Any], curves: str | Path | None = None,
                       few_steps: int = 20) -> Path:  # fmt: skip
    """Write `adapt`'s report.html (atomically): held-out retrieval before and after, localization of held-out
    views on the whole-area index, the fine-tune's curves (`curves`, a PNG, embedded), stage times, the commands
    that use the result and the settings; `few_steps`: fewer fine-tune steps than this are flagged."""
    b, a = report["before"], report["after"]
    change = {"model": "change", **{k: a[k] - b[k] for k in ("R@1", "R@5", "AP")}}
    steps = report.get("steps") or 0
    parts = [f"<h1>Adaptation to {_esc(Path(report['config']['ortho']).name)}</h1>",
             "<h2>Held-out views, before and after</h2><p>Drone -> satellite retrieval on views rendered from the "
             f"area but never trained on ({_esc(b['queries'])} queries, {_esc(b['gallery'])} tiles, paper "
             f"protocol; percentages). Fine-tuned for {steps} step{'' if steps == 1 else 's'} (budget "
             f"{_esc(report.get('budget', ''))}) on "
             f"{_esc(report.get('training_locations'))} locations"
             + (f": <b>{ADAPT_STEPS_NOTE}</b>" if steps < few_steps else "") + ".</p>",
             _table([{"model": "before", **b}, {"model": "after", **a}, change], ("model", "R@1", "R@5", "AP"))]
    loc = report.get("localization", {})
    if loc:
        parts += ["<h2>Localization on the whole-area index</h2><p>Held-out views registered to the orthophoto "
                  f"({_esc(report.get('tiles'))} tiles): fix rate, false fixes (farther than 25 m), camera error over "
                  "all views (a view without a fix counts with its tile-level estimate), 95 % radius coverage. "
                  "The views are rendered from this orthophoto: real photos of another date register less often.</p>",
                  _table([loc], list(loc), percent=True, spaced=True)]
    if curves is not None and Path(curves).is_file():
        parts += ["<h2>Fine-tune</h2>", _image(curves, "fine-tune curves")]
    stages = [{"stage": k, "seconds": v} for k, v in report.get("seconds", {}).items()]
    parts += ["<h2>Stage times</h2>",
              _table(stages + [{"stage": "total", "seconds": sum(r["seconds"] for r in stages)}], ("stage", "seconds")),
              "<h2>Use it</h2><pre>" + "\n".join(_esc(c) for c in report.get("commands", [])) + "</pre>",
              "<h2>Settings</h2>", _table([{"setting": k, "value": f"{v:g}" if isinstance(v, float) else str(v)}
                                          for k, v in report["config"].items()], ("setting", "value"))]  # fmt: skip
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>spikevimformer adapt</title>"
           f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(path, doc)
