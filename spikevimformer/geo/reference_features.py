"""Reference features stored with a gallery index: computed once at `index build`, not per query.

Each tile's registration window (footprint plus margin, at most max_px wide) is described by two kinds of
features. Learned ones (XFeat) at two resolutions: full (the re-match after warping) and coarse (the orientation
search), descriptors float16 (L2-normalised 64-d; fp16 keeps matches the same). Invariant ones (SIFT, what `auto`
matches first) at full resolution, descriptors uint8 (OpenCV's SIFT descriptors are whole numbers 0..255: exact),
about 1 MB a 1024 px window. Each kind is one .npz per index generation: keypoints float32, descriptors, per-tile
offsets and sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..progress import progress_bar
from ..registration import Features, Matcher, RegisterConfig, Registrar
from ..registration.matchers import LEARNED
from .tiles import NoReference, Tile
from .windows import read_window

if TYPE_CHECKING:  # index.py stores these features: a type only, no import at run time
    from .index import GalleryIndex

LEVELS = ("full", "coarse")
XFEAT = "xfeat"  # the extractor behind every learned matcher (registration.matchers.LEARNED)
INVARIANT_MATCHER = "sift"  # the invariant matcher whose features are stored (auto's first)
LEARNED_KIND, INVARIANT_KIND = "learned", "invariant"
KINDS = (LEARNED_KIND, INVARIANT_KIND)
MANIFEST_KEYS = {LEARNED_KIND: "reference_features", INVARIANT_KIND: "invariant_features"}  # their settings
FILE_KEYS = {LEARNED_KIND: "reference", INVARIANT_KIND: "invariant"}  # their file in the manifest's "files"
DESCRIPTOR_DTYPES = {LEARNED_KIND: np.float16, INVARIANT_KIND: np.uint8}


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


Entry = tuple[Features, Features | None, float]  # full, coarse (learned only), coarse scale


def compute(tiles: Sequence[Tile], registrar: Registrar, matcher: Matcher, desc: str) -> dict[str, Entry]:
    """`matcher`'s reference features of every tile that has imagery (tiles without are left out), by tile id."""
    cfg = registrar.cfg
    out: dict[str, Entry] = {}
    for tile in progress_bar(tiles, desc=desc, unit="tile"):
        try:
            window = read_window(tile, cfg.margin, cfg.reference_max_px)
        except NoReference:
            continue
        out[tile.id] = registrar.reference(window, matcher)
    return out


def store(index: GalleryIndex, tiles: Sequence[Tile], kinds: Sequence[str] = KINDS) -> None:
    """Compute and add to a GalleryIndex the features of `kinds` of the tiles' registration windows (default
    settings, or those the index already stores); saved with the index's next save()."""
    for kind in kinds:
        settings = index.feature_settings.get(kind)
        default = RegisterConfig(features=XFEAT if kind == LEARNED_KIND else INVARIANT_MATCHER)
        cfg = ReferenceSettings(**settings).register_config() if settings else default
        registrar = Registrar(cfg)
        matcher = registrar.learned if kind == LEARNED_KIND else registrar.invariant
        entries = compute(tiles, registrar, matcher, f"{matcher.name} reference features")
        if entries:
            index.add_reference_features(entries, asdict(ReferenceSettings.of(cfg, matcher.name)), kind)


def write(path: str, entries: dict[str, Entry], kind: str = LEARNED_KIND) -> None:
    """The entries of one kind as one .npz of plain arrays (no pickles)."""
    ids = list(entries)
    arrays: dict[str, np.ndarray] = {"ids": np.array(ids, dtype=np.str_),
                                     "scales": np.array([entries[i][2] for i in ids], dtype=np.float64)}  # fmt: skip
    for level, pos in zip(_levels(kind), (0, 1), strict=False):
        feats = [entries[i][pos] for i in ids]
        arrays[f"{level}_offsets"] = np.cumsum([0, *(len(f) for f in feats)]).astype(np.int64)
        arrays[f"{level}_keypoints"] = np.concatenate([f.keypoints for f in feats] or [np.zeros((0, 2))]).astype(
            np.float32)
        dim = feats[0].descriptors.shape[1] if feats else 64
        arrays[f"{level}_descriptors"] = np.concatenate(
            [f.descriptors for f in feats] or [np.zeros((0, dim))]).astype(DESCRIPTOR_DTYPES[kind])
        arrays[f"{level}_sizes"] = np.array([f.size for f in feats], dtype=np.int64).reshape(-1, 2)
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez(f, **arrays)


def read(path: str, kind: str = LEARNED_KIND) -> dict[str, Entry]:
    """Entries of one kind by tile id (learned descriptors as float32, invariant ones kept uint8: the matcher
    converts the pair it matches); ValueError naming the file when it is unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
        ids = [str(i) for i in data["ids"]]
        scales = data["scales"]
        levels = {}
        for level in _levels(kind):
            off, kp = data[f"{level}_offsets"], data[f"{level}_keypoints"]
            desc, sizes = data[f"{level}_descriptors"], data[f"{level}_sizes"]
            desc = desc.astype(np.float32) if kind == LEARNED_KIND else desc
            levels[level] = [Features(kp[off[j]:off[j + 1]], desc[off[j]:off[j + 1]], (int(sizes[j][0]),
                                      int(sizes[j][1]))) for j in range(len(ids))]  # fmt: skip
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"the stored reference features {path} are unreadable ({exc}); rebuild the index") from exc
    coarse = levels.get("coarse", [None] * len(ids))
    return {i: (levels["full"][j], coarse[j], float(scales[j])) for j, i in enumerate(ids)}


def count(path: str) -> int:
    """How many tiles a stored file holds, reading its ids alone (a .npz member is read on access)."""
    try:
        return len(np.load(path, allow_pickle=False)["ids"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"the stored reference features {path} are unreadable ({exc}); rebuild the index") from exc


def _levels(kind: str) -> tuple[str, ...]:
    return LEVELS if kind == LEARNED_KIND else LEVELS[:1]
