"""Learned reference features stored with a gallery index: computed once at `index build`, not per query.

Each tile's registration window (footprint plus margin, at most max_px wide) is described by the matcher at two
resolutions: full (the re-match after warping) and coarse (the orientation search). They are stored in one .npz
per index generation: keypoints float32, descriptors float16 (XFeat's are L2-normalised 64-d; fp16 keeps matches
the same), and per-tile offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..progress import progress_bar
from ..registration import Features, RegisterConfig, Registrar
from ..registration.matchers import LEARNED
from .tiles import NoReference, Tile
from .windows import read_window

if TYPE_CHECKING:  # index.py stores these features: a type only, no import at run time
    from .index import GalleryIndex

LEVELS = ("full", "coarse")
XFEAT = "xfeat"  # the extractor behind every learned matcher (registration.matchers.LEARNED)


@dataclass(frozen=True)
class ReferenceSettings:
    """What the stored features were computed with; a localizer with other settings recomputes them."""

    matcher: str
    margin: float
    max_px: int
    keypoints: int
    coarse_px: int
    coarse_keypoints: int

    @classmethod
    def of(cls, cfg: RegisterConfig, matcher: str) -> ReferenceSettings:
        """The settings of `matcher`'s reference features; xfeat and xfeat-mnn share theirs (the same XFeat
        keypoints and descriptors, matched by LighterGlue or by mutual nearest neighbours)."""
        return cls(XFEAT if matcher in LEARNED else matcher, cfg.margin, cfg.reference_max_px,
                   cfg.reference_keypoints, cfg.coarse_window_px, cfg.coarse_keypoints)

    def register_config(self) -> RegisterConfig:
        return RegisterConfig(features=self.matcher, margin=self.margin, reference_max_px=self.max_px,
                              reference_keypoints=self.keypoints, coarse_window_px=self.coarse_px,
                              coarse_keypoints=self.coarse_keypoints)  # fmt: skip


Entry = tuple[Features, Features, float]  # full, coarse, coarse scale


def compute(tiles: Sequence[Tile], registrar: Registrar) -> dict[str, Entry]:
    """Reference features of every tile that has imagery (tiles without are left out), by tile id."""
    matcher, cfg = registrar.learned, registrar.cfg
    out: dict[str, Entry] = {}
    for tile in progress_bar(tiles, desc="reference features", unit="tile"):
        try:
            window = read_window(tile, cfg.margin, cfg.reference_max_px)
        except NoReference:
            continue
        out[tile.id] = registrar.reference(window, matcher)
    return out


def store(index: GalleryIndex, tiles: Sequence[Tile], settings: dict | None = None) -> None:
    """Compute and add to a GalleryIndex the learned features of the tiles' registration windows (default
    settings, or those the index already stores); saved with the index's next save()."""
    cfg = ReferenceSettings(**settings).register_config() if settings else RegisterConfig(features="xfeat")
    registrar = Registrar(cfg)
    entries = compute(tiles, registrar)
    if entries:
        index.add_reference_features(entries, asdict(ReferenceSettings.of(cfg, registrar.learned.name)))


def write(path: str, entries: dict[str, Entry]) -> None:
    """The entries as one .npz of plain arrays (no pickles)."""
    ids = list(entries)
    arrays: dict[str, np.ndarray] = {"ids": np.array(ids, dtype=np.str_),
                                     "scales": np.array([entries[i][2] for i in ids], dtype=np.float64)}  # fmt: skip
    for level, pos in zip(LEVELS, (0, 1), strict=True):
        feats = [entries[i][pos] for i in ids]
        arrays[f"{level}_offsets"] = np.cumsum([0, *(len(f) for f in feats)]).astype(np.int64)
        arrays[f"{level}_keypoints"] = np.concatenate([f.keypoints for f in feats] or [np.zeros((0, 2))]).astype(
            np.float32)
        dim = feats[0].descriptors.shape[1] if feats else 64
        arrays[f"{level}_descriptors"] = np.concatenate(
            [f.descriptors for f in feats] or [np.zeros((0, dim))]).astype(np.float16)
        arrays[f"{level}_sizes"] = np.array([f.size for f in feats], dtype=np.int64).reshape(-1, 2)
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez(f, **arrays)


def read(path: str) -> dict[str, Entry]:
    """Entries by tile id; ValueError naming the file when it is unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
        ids = [str(i) for i in data["ids"]]
        scales = data["scales"]
        levels = {}
        for level in LEVELS:
            off, kp = data[f"{level}_offsets"], data[f"{level}_keypoints"]
            desc, sizes = data[f"{level}_descriptors"].astype(np.float32), data[f"{level}_sizes"]
            levels[level] = [Features(kp[off[j]:off[j + 1]], desc[off[j]:off[j + 1]], (int(sizes[j][0]),
                                      int(sizes[j][1]))) for j in range(len(ids))]  # fmt: skip
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"the stored reference features {path} are unreadable ({exc}); rebuild the index") from exc
    return {i: (levels["full"][j], levels["coarse"][j], float(scales[j])) for j, i in enumerate(ids)}
