"""SynthConfig: every knob of the synthetic cross-view world, with the layout-dependent defaults resolved."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

LAYOUTS = ("university1652", "sues200")
NEW_WORLD_EPOCH_GAP = 0.5  # the CLI's default for a new procedural world: reference and photos on other dates

# Defaults per layout: total locations, drone views (per location for University-1652, per altitude for
# SUES-200), camera altitudes (a (min, max) spiral for University-1652, the four SUES-200 heights) and the
# test share (SUES-200: 80 of 200, as published).
LAYOUT_DEFAULTS = {
    "university1652": {"locations": 250, "views": 8, "altitudes_m": (70.0, 120.0), "test_fraction": 0.2},
    "sues200": {"locations": 200, "views": 5, "altitudes_m": (150.0, 200.0, 250.0, 300.0), "test_fraction": 0.4},
}


@dataclass(frozen=True)
class SynthConfig:
    """What world to make and how hard its drone views are; None fields take the layout's default."""

    seed: int = 0
    layout: str = "university1652"
    locations: int | None = None  # total: train + test (+ distractors for University-1652)
    views: int | None = None  # drone views per location (University-1652) or per altitude (SUES-200)
    image_size: int = 256  # side of every written image, px
    footprint_m: float = 100.0  # ground side of a satellite tile
    gsd_m: float | None = None  # metres per pixel of the world (procedural default 0.5; --ground: required
    # unless the world file gives it)
    spacing_m: float | None = None  # least distance between two locations (default: footprint, no overlap)
    altitudes_m: tuple[float, ...] | None = None
    pitch_deg: tuple[float, float] = (45.0, 60.0)  # camera depression below the horizon, drawn uniformly
    heading_jitter_deg: float = 12.0  # spread around the evenly spaced headings of the circle
    target_jitter_m: float = 3.0  # the look-at point wanders this far (std) from the tile centre
    coverage: float = 1.1  # drone view width at the target / tile footprint, sets the lens when fov_deg is None
    fov_deg: float | None = None  # horizontal = vertical field of view of the drone camera
    photometric: float = 1.0  # strength of light, colour, haze, blur and noise changes (0 = none)
    epoch_gap: float = 0.0  # how far apart the reference's (ortho.jpg, tiles) and the photos' dates are, 0..1
    # (epochs.py); 0, one date, is every world made before the knob (the CLI's default is NEW_WORLD_EPOCH_GAP)
    relief_m: float = 0.0  # terrain relief, lowest to highest point (terrain.py); 0: flat ground (dsm.tif with more)
    distortion: float = 0.0  # radial distortion k1 of the drone lens (Brown-Conrady, k2 = -0.4 k1 as DJI lenses
    # have); 0: a pinhole. Recorded in cameras.csv, cameras.json and the photos' DJI XMP DewarpData
    test_fraction: float | None = None  # layout default: 0.2 University-1652, 0.4 SUES-200
    distractor_fraction: float = 0.16  # University-1652 only: extra gallery-only locations
    max_height_m: float = 45.0  # tallest procedural building
    origin: tuple[float, float] | None = None  # (lat, lon) of the world's north-west corner; None = from seed
    ground: str | None = None  # a user's RGB orthophoto instead of the procedural world
    world_file: str | None = None  # its ESRI world file (geotransform)
    crs: str = "EPSG:4326"  # coordinate system of the world file
    heights: str | None = None  # a height image aligned with it (metres = grey level x height_scale): surface
    height_scale: float = 1.0
    dsm: str | None = None  # or a surface model GeoTIFF (any CRS) of it: terrain, and buildings extruded from it
    dsm_units: str | None = None  # the DSM's heights, 'm' or 'ft', where its CRS does not say (geo.terrain)
    jpeg_quality: int = 90

    def resolved(self) -> SynthConfig:
        """A copy with the layout defaults and the lens filled in, validated."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        d = LAYOUT_DEFAULTS[self.layout]
        cfg = replace(
            self,
            locations=d["locations"] if self.locations is None else int(self.locations),
            views=d["views"] if self.views is None else int(self.views),
            altitudes_m=tuple(float(a) for a in (self.altitudes_m or d["altitudes_m"])),
            pitch_deg=(float(self.pitch_deg[0]), float(self.pitch_deg[1])),
            spacing_m=float(self.footprint_m if self.spacing_m is None else self.spacing_m),
            gsd_m=0.5 if self.gsd_m is None and self.ground is None else self.gsd_m,
            test_fraction=d["test_fraction"] if self.test_fraction is None else float(self.test_fraction),
            epoch_gap=float(self.epoch_gap),
        )
        cfg._validate()
        if cfg.fov_deg is None:
            cfg = replace(cfg, fov_deg=cfg.auto_fov_deg())
        if cfg.pitch_deg[0] - cfg.fov_deg / 2 < 5.0:
            raise ValueError(
                f"the top of a drone view would reach the horizon (pitch {cfg.pitch_deg[0]:g} deg with a "
                f"{cfg.fov_deg:.1f} deg lens); raise the pitch or narrow the field of view"
            )
        return cfg

    def _validate(self) -> None:
        if self.locations < 4:
            raise ValueError(f"a world needs at least 4 locations, got {self.locations}")
        if self.locations > 9999:
            raise ValueError(f"location ids have 4 digits, so at most 9999 locations, got {self.locations}")
        if self.views < 1:
            raise ValueError(f"views must be at least 1, got {self.views}")
        if not 16 <= self.image_size <= 2048:
            raise ValueError(f"image size must lie in 16..2048 px, got {self.image_size}")
        if self.footprint_m <= 0 or self.spacing_m <= 0 or (self.gsd_m is not None and self.gsd_m <= 0):
            raise ValueError("footprint, ground resolution and spacing must be positive metres")
        if self.ground is not None and self.gsd_m is None and self.world_file is None:
            raise ValueError("a user orthophoto needs its ground resolution (--gsd M) or a world file")
        if self.gsd_m is not None and self.footprint_m / self.gsd_m < 16:
            raise ValueError(
                f"a {self.footprint_m:g} m tile is only {self.footprint_m / self.gsd_m:.0f} px at {self.gsd_m:g} m/px"
            )
        if not self.altitudes_m or min(self.altitudes_m) <= 0:
            raise ValueError(f"altitudes must be positive metres, got {list(self.altitudes_m or ())}")
        if self.layout == "university1652" and len(self.altitudes_m) not in (1, 2):
            raise ValueError("University-1652 views take one altitude or a (min, max) range")
        if self.layout == "sues200" and len(set(self.altitudes_m)) != len(self.altitudes_m):
            raise ValueError(f"SUES-200 altitudes must differ, got {list(self.altitudes_m)}")
        lo, hi = self.pitch_deg
        if not 10 <= lo <= hi <= 90:
            raise ValueError(f"pitch must be a range within 10..90 degrees below the horizon, got {lo:g}..{hi:g}")
        if self.fov_deg is not None and not 5 <= self.fov_deg <= 120:
            raise ValueError(f"field of view must lie in 5..120 degrees, got {self.fov_deg:g}")
        if self.coverage <= 0 or self.photometric < 0 or self.heading_jitter_deg < 0 or self.target_jitter_m < 0:
            raise ValueError("coverage must be positive; photometric strength and jitters must not be negative")
        if not (0 < self.test_fraction < 1 and 0 <= self.distractor_fraction < 1
                and self.test_fraction + self.distractor_fraction < 1):
            raise ValueError("test and distractor fractions must lie in [0, 1) and leave room for training")
        if self.ground is None and min(self.altitudes_m) < self.max_height_m + 10:
            raise ValueError(
                f"the lowest altitude ({min(self.altitudes_m):g} m) must clear the tallest building "
                f"({self.max_height_m:g} m) by 10 m"
            )
        if not 0 <= self.epoch_gap <= 1:  # also refuses NaN
            raise ValueError(f"the epoch gap must lie in 0..1, got {self.epoch_gap:g}")
        if not 0 <= self.relief_m <= 500:
            raise ValueError(f"terrain relief must lie in 0..500 m, got {self.relief_m:g}")
        if not -0.4 <= self.distortion <= 0.4:
            raise ValueError(f"lens distortion k1 must lie in -0.4..0.4 (barrel < 0 < pincushion), got "
                             f"{self.distortion:g}")  # fmt: skip
        if self.dsm and (self.ground is None or self.world_file is None):
            raise ValueError("a DSM lies on a georeferenced orthophoto: pass --ground IMAGE with --world-file (the "
                             "procedural world takes --relief-m)")  # fmt: skip
        if self.dsm and self.heights:
            raise ValueError("--dsm and --heights both give the surface's heights: pass one")
        if self.dsm_units and not self.dsm:
            raise ValueError("--dsm-units describes a --dsm; pass --dsm DSM.tif too")
        if self.dsm_units not in (None, "m", "ft"):
            raise ValueError(f"DSM units must be 'm' or 'ft', got {self.dsm_units!r}")
        if not 30 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must lie in 30..100, got {self.jpeg_quality}")

    def auto_fov_deg(self) -> float:
        """The lens that makes the mean drone view as wide at the target as `coverage` tiles."""
        pitch = math.radians(sum(self.pitch_deg) / 2)
        slant = sum(self.altitudes_m) / len(self.altitudes_m) / math.sin(pitch)
        return math.degrees(2 * math.atan(self.coverage * self.footprint_m / (2 * slant)))

    @property
    def dist(self) -> tuple[float, ...]:
        """OpenCV distortion coefficients (k1, k2, p1, p2, k3) of the drone lens; () for a pinhole."""
        return (self.distortion, -0.4 * self.distortion, 0.0, 0.0, 0.0) if self.distortion else ()

    def split_counts(self) -> tuple[int, int, int]:
        """(train, test, distractor) location counts."""
        n = self.locations
        test = max(1, round(n * self.test_fraction))
        distractor = round(n * self.distractor_fraction) if self.layout == "university1652" else 0
        train = n - test - distractor
        if train < 1:
            raise ValueError(f"{n} locations leave none for training")
        return train, test, distractor

    def to_record(self) -> dict:
        """The settings as stored in world.json (output-affecting fields only)."""
        rec = asdict(self)
        rec["altitudes_m"] = list(self.altitudes_m or ())
        rec["pitch_deg"] = list(self.pitch_deg)
        rec["origin"] = list(self.origin) if self.origin else None
        return rec
