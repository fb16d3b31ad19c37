"""The embedded synthetic cross-view world: a geo-referenced orthophoto, satellite tiles and drone views.

`generate_world(SynthConfig(...), out_dir)` writes a University-1652 (or SUES-200) layout plus
`locations.csv`, `cameras.csv`, `ortho.jpg`/`ortho.jgw` and `world.json`; deterministic per seed. With
`epoch_gap` > 0 the reference (ortho.jpg, satellite tiles) shows another date than the drone photos (epochs.py).
"""

from .baseline import retrieval_baseline
from .camera import Camera, ViewSpec, plan_views, view_reach_m
from .config import LAYOUTS, NEW_WORLD_EPOCH_GAP, SynthConfig
from .geo import GeoRef
from .pipeline import SynthSummary, build_world, default_workers, generate_world
from .render import drone_view, satellite_tile
from .world import Buildings, World

__all__ = [
    "LAYOUTS", "NEW_WORLD_EPOCH_GAP", "Buildings", "Camera", "GeoRef", "SynthConfig", "SynthSummary", "ViewSpec",
    "World", "build_world", "default_workers", "drone_view", "generate_world", "plan_views", "retrieval_baseline",
    "satellite_tile", "view_reach_m",
]
