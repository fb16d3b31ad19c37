"""The dataset doctor: counts against the published ones, empty folders, bad images, one-view ids, SUES-200 bugs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import sues200, university1652
from .benchmark import short_ids
from .images import MAX_ASPECT, MIN_SIDE_PX, list_images, list_subfolders, scan_images

MAX_LISTED = 20


@dataclass
class SplitRow:
    """Counts of one image folder next to the published ones."""

    split: str
    locations: int = 0
    images: int = 0
    empty: int = 0
    published: tuple[int, int] | None = None
    missing: bool = False

    @property
    def status(self) -> str:
        if self.missing:
            return "MISSING"
        if self.images == 0:
            return "NO IMAGES"
        if self.published is None or self.published == (self.locations, self.images):
            return "ok"
        return "differs"


@dataclass
class CheckReport:
    """Everything `data check` found; `usable` decides the exit code."""

    dataset: str
    root: Path
    rows: list[SplitRow] = field(default_factory=list)
    empty_folders: list[Path] = field(default_factory=list)
    bad_images: list[tuple[Path, str]] = field(default_factory=list)
    odd_shapes: list[tuple[Path, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images_checked: int = 0

    @property
    def usable(self) -> bool:
        return not self.errors


@dataclass
class _Folder:
    """A scanned image folder: location id -> images."""

    rel: str
    by_id: dict[str, list[Path]] | None  # None when the folder is missing

    def ids(self) -> set[str]:
        return {k for k, v in (self.by_id or {}).items() if v}

    def images(self) -> list[Path]:
        return [p for v in (self.by_id or {}).values() for p in v]


def check_dataset(path: Path | str, name: str = "auto", altitude: int | None = None, full: bool = False,
                  check_images: bool = True, progress: bool = False) -> CheckReport:
    """Inspect a University-1652 or SUES-200 tree (folder or parent); never raises for a damaged dataset."""
    from . import detect_dataset, find_dataset_root

    if name == "auto":
        name, root = detect_dataset(path)
    else:
        root = find_dataset_root(path, name)
    if name == "university1652":
        report, folders, pairs = _university(root)
    elif sues200.is_raw(root):
        report, folders, pairs = _sues_raw(root, altitude)
    else:
        report, folders, pairs = _sues_split(root, altitude)
    _common(report, folders, pairs, full, check_images, progress)
    return report


# -- per layout ------------------------------------------------------------------------------------
def _scan(root: Path, rel: str) -> _Folder:
    folder = root / rel
    if not folder.is_dir():
        return _Folder(rel, None)
    return _Folder(rel, {sub.name: list_images(sub) for sub in list_subfolders(folder)})


def _row(folder: _Folder, published: tuple[int, int] | None) -> SplitRow:
    if folder.by_id is None:
        return SplitRow(folder.rel, published=published, missing=True)
    by_id = folder.by_id
    return SplitRow(folder.rel, len(by_id), sum(map(len, by_id.values())), sum(1 for v in by_id.values() if not v),
                    published)


def _university(root: Path):
    report = CheckReport("University-1652", root)
    folders = {rel: _scan(root, rel) for rel in university1652.PUBLISHED}
    report.rows = [_row(f, university1652.PUBLISHED[rel]) for rel, f in folders.items()]
    pairs = [("train/satellite", "train/drone", "training", True)]
    pairs += [(q, g, d, False) for d, (q, g) in university1652.TEST_SETS.items()]
    return report, folders, pairs


def _sues_altitudes(root: Path, altitude: int | None, report: CheckReport) -> list[int]:
    alts = sues200.available_altitudes(root)
    if altitude is not None:
        if altitude not in alts:
            report.errors.append(f"no data at altitude {altitude} (available: {', '.join(map(str, alts)) or 'none'})")
            return []
        return [altitude]
    if not alts:
        report.errors.append("no altitude folders (150, 200, 250, 300) found")
    return alts


def _sues_split(root: Path, altitude: int | None):
    report = CheckReport("SUES-200 (split layout)", root)
    folders: dict[str, _Folder] = {}
    pairs = []
    alts = _sues_altitudes(root, altitude, report)
    for alt in alts:
        for pattern, published in sues200.PUBLISHED.items():
            rel = pattern.format(alt=alt)
            folders[rel] = _scan(root, rel)
            report.rows.append(_row(folders[rel], published))
        pairs.append((f"Training/{alt}/satellite", f"Training/{alt}/drone", f"training {alt} m", True))
        pairs += [(f"Testing/{alt}/{q}", f"Testing/{alt}/{g}", f"{d} {alt} m", False)
                  for d, (q, g) in sues200.TEST_SETS.items()]
    every = sues200.available_altitudes(root) if alts else []
    for kind in ("Training/{alt}/drone", "Testing/{alt}/query_drone", "Testing/{alt}/gallery_drone"):
        by_alt = {a: folders.get(kind.format(alt=a)) or _scan(root, kind.format(alt=a)) for a in every}
        _altitude_copy_bug(report, kind, by_alt)
    return report, folders, pairs


def _sues_raw(root: Path, altitude: int | None):
    report = CheckReport("SUES-200 (raw release)", root)
    alts = _sues_altitudes(root, altitude, report)
    sat = _scan(root, sues200.RAW_SATELLITE)
    folders = {sat.rel: sat}
    report.rows.append(_row(sat, sues200.PUBLISHED_RAW[sues200.RAW_SATELLITE]))
    pairs = []
    locations = list_subfolders(root / sues200.RAW_DRONE)
    for alt in alts:
        rel = f"{sues200.RAW_DRONE}/*/{alt}"
        folders[rel] = _Folder(rel, {loc.name: list_images(loc / str(alt)) for loc in locations})
        report.rows.append(_row(folders[rel], sues200.PUBLISHED_RAW[sues200.RAW_DRONE + "/*/{alt}"]))
        pairs.append((sat.rel, rel, f"{alt} m", True))
    fixed = sues200.train_ids()
    present = sat.ids()
    n_train = len(present & fixed)
    report.notes.append(f"raw release: the fixed split gives {n_train} training and {len(present - fixed)} test "
                        f"locations (published: 120 / 80)")
    if n_train == 0 and present:
        report.errors.append("none of the 120 fixed SUES-200 training ids is present; the fixed split cannot apply")
    by_alt = {a: folders[f"{sues200.RAW_DRONE}/*/{a}"] for a in alts}
    _altitude_copy_bug(report, f"{sues200.RAW_DRONE}/*/{{alt}}", by_alt)
    return report, folders, pairs


def _altitude_copy_bug(report: CheckReport, kind: str, by_alt: dict[int, _Folder]) -> None:
    """The SUES-200 split script copied every altitude into each altitude folder: look for its two traces."""
    per_loc = {a: [len(v) for v in (f.by_id or {}).values() if v] for a, f in by_alt.items()}
    for a, counts in per_loc.items():
        if counts and sorted(counts)[len(counts) // 2] >= 2 * sues200.DRONE_PER_LOCATION:
            median = sorted(counts)[len(counts) // 2]
            report.errors.append(f"{kind.format(alt=a)}: {median} drone images per location, "
                                 f"{median / sues200.DRONE_PER_LOCATION:.0f}x the published "
                                 f"{sues200.DRONE_PER_LOCATION}; the SUES-200 split-script bug copied every "
                                 "altitude into each altitude folder. Re-split from the raw release "
                                 "(point --data-root at it; the fixed split is applied on load)")
    # identical files in two altitude folders of the same location cannot happen in a correct split
    shared = sues200.shared_across_altitudes({a: f.by_id for a, f in by_alt.items() if f.by_id})
    if shared:
        pairs = ", ".join(f"{a} m/{b} m" for a, b in shared)
        report.errors.append(f"{kind.replace('{alt}', '<alt>')}: identical images in different altitude folders "
                             f"({pairs}); the SUES-200 split-script bug copied every altitude into each altitude "
                             "folder. Re-split from the raw release (the fixed split is applied on load)")


# -- shared checks ---------------------------------------------------------------------------------
def _common(report: CheckReport, folders: dict[str, _Folder], pairs: list[tuple[str, str, str, bool]],
            full: bool, check_images: bool, progress: bool) -> None:
    for rel, f in folders.items():
        if f.by_id is None:
            report.errors.append(f"missing folder {report.root / rel}")
            continue
        if not f.by_id:
            report.errors.append(f"{rel}: no location folders")
        elif not f.images():
            report.errors.append(f"{rel}: no images")
        bad_names = [k for k in f.by_id if not k.isdigit()]
        if bad_names:
            report.errors.append(f"{rel}: folder names are not numeric location ids: {short_ids(bad_names)}")
        if "*" in rel:
            report.empty_folders += [report.root / rel.replace("*", k) for k, v in f.by_id.items() if not v]
        else:
            report.empty_folders += [report.root / rel / k for k, v in f.by_id.items() if not v]
    if report.empty_folders:
        report.warnings.append(f"{len(report.empty_folders)} empty location folder(s); they are ignored")

    for view_a, view_b, what, both_views in pairs:
        a, b = folders.get(view_a), folders.get(view_b)
        if a is None or b is None or a.by_id is None or b.by_id is None:
            continue
        only_a, only_b = a.ids() - b.ids(), b.ids() - a.ids()
        if both_views:  # the two views of the same locations: every id needs both
            if only_a:
                report.warnings.append(f"{what}: {len(only_a)} id(s) only in {view_a}: {short_ids(only_a)}")
            if only_b:
                report.warnings.append(f"{what}: {len(only_b)} id(s) only in {view_b}: {short_ids(only_b)}")
            if a.ids() and b.ids() and not a.ids() & b.ids():
                report.errors.append(f"{what}: no location has images in both {view_a} and {view_b}")
        elif only_a:  # a query location without a gallery positive cannot be matched (it is skipped)
            report.warnings.append(f"{what}: {len(only_a)} query id(s) in {view_a} have no image in "
                                   f"{view_b}: {short_ids(only_a)}")

    differs = [r for r in report.rows if r.status == "differs"]
    if differs:
        report.notes.append(f"counts differ from the published {report.dataset.split(' ')[0]} ones in "
                            f"{len(differs)} folder(s): fine for a subset or a synthetic world in the same layout")
    elif report.rows and all(r.status == "ok" for r in report.rows):
        report.notes.append("counts match the published ones")

    if check_images:
        paths = [p for f in folders.values() for p in f.images()]
        report.images_checked = len(set(paths))
        scan = scan_images(sorted(set(paths)), full=full, progress=progress)
        report.bad_images, report.odd_shapes = scan.bad, scan.odd_shapes
        if report.bad_images:
            report.warnings.append(f"{len(report.bad_images)} unreadable or truncated image(s); remove or replace "
                                   "them, or pass --skip-bad-images to train and evaluate")
        if report.odd_shapes:
            report.warnings.append(f"{len(report.odd_shapes)} image(s) with a suspect shape (below {MIN_SIDE_PX} px "
                                   f"on a side or beyond {MAX_ASPECT:.0f}:1); they are used, but check them")
        for rel, f in folders.items():
            imgs = set(f.images())
            if imgs and imgs <= {p for p, _ in report.bad_images}:
                report.errors.append(f"{rel}: every image is unreadable")


def format_report(report: CheckReport) -> str:
    """A readable table plus findings; the CLI prints it."""
    lines = [f"{report.dataset} at {report.root}", ""]
    header = f"{'folder':<34}{'locations':>10}{'images':>10}{'published':>18}{'empty':>7}  status"
    lines += [header, "-" * len(header)]
    for r in report.rows:
        pub = f"{r.published[0]:,} / {r.published[1]:,}" if r.published else "-"
        if r.missing:
            lines.append(f"{r.split:<34}{'-':>10}{'-':>10}{pub:>18}{'-':>7}  {r.status}")
        else:
            lines.append(f"{r.split:<34}{r.locations:>10,}{r.images:>10,}{pub:>18}{r.empty:>7}  {r.status}")
    lines.append("")
    if report.images_checked:
        lines.append(f"images checked: {report.images_checked:,}, unreadable: {len(report.bad_images)}")
    for title, items in (("errors", report.errors), ("warnings", report.warnings), ("notes", report.notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {m}" for m in items]
    if report.empty_folders:
        lines.append("empty folders:")
        lines += [f"  {p}" for p in report.empty_folders[:MAX_LISTED]]
        if len(report.empty_folders) > MAX_LISTED:
            lines.append(f"  ... and {len(report.empty_folders) - MAX_LISTED} more")
    for title, found in (("unreadable images", report.bad_images), ("suspect shapes", report.odd_shapes)):
        if found:
            lines.append(f"{title}:")
            lines += [f"  {p}: {why}" for p, why in found[:MAX_LISTED]]
            if len(found) > MAX_LISTED:
                lines.append(f"  ... and {len(found) - MAX_LISTED} more")
    verdict = "usable" if report.usable else "NOT usable"
    lines.append(f"verdict: {verdict} ({len(report.errors)} error(s), {len(report.warnings)} warning(s))")
    return "\n".join(lines)
