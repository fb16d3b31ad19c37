"""Geo-referenced galleries: tiles with coordinates, a persistent descriptor index, photo -> tiles -> registration
to the orthophoto -> camera position."""

from ..geodesy import LocalFrame, haversine_m
from .encoders import OnnxEncoder, TorchEncoder
from .index import GalleryIndex, IndexConfig, ModelIdentity
from .intrinsics import Intrinsics
from .localize import Localization, Localizer
from .metrics import distance_metrics
from .tiles import Tile, folder_tiles, orthophoto_tiles, world_tiles

__all__ = [
    "GalleryIndex", "IndexConfig", "Intrinsics", "LocalFrame", "Localization", "Localizer", "ModelIdentity",
    "OnnxEncoder", "Tile", "TorchEncoder", "distance_metrics", "folder_tiles", "haversine_m", "orthophoto_tiles",
    "world_tiles",
]
