"""GalleryIndex: tile descriptors + coordinates + a faiss index in a folder, tied to the model that made them."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, atomic_write_json
from . import reference_features
from .reference_features import LEARNED_KIND
from .tiles import Tile

FORMAT = "spikevimformer-gallery/1"
MANIFEST = "manifest.json"
TILE_COLUMNS = [f.name for f in fields(Tile)]


@dataclass(frozen=True)
class ModelIdentity:
    """What makes descriptors comparable: same weights, same input size, same width."""

    variant: str
    checkpoint_sha256: str  # weights tag of checkpoint.load_model: a SHA-256, "imagenet-init:..." or "random-init:..."
    image_size: int
    dim: int
    weights: str = ""  # where the weights came from, to load them again: a release name, an absolute file path, or
    # a path relative to the index folder (adapt's ../finetune/last.pt, so its output folder can move)

    def mismatch(self, other: ModelIdentity) -> str | None:
        """A sentence naming every difference (this identity's value first), or None when descriptors are
        comparable."""
        def show(value) -> str:  # hashes to 12 characters, enough to tell two apart
            return repr(value[:12] + "..." if isinstance(value, str) and len(value) > 40 else value)

        diffs = [
            f"{name} {show(getattr(self, name))} vs {show(getattr(other, name))}"
            for name in ("variant", "checkpoint_sha256", "image_size", "dim")
            if getattr(self, name) != getattr(other, name)
        ]
        return "; ".join(diffs) or None


@dataclass(frozen=True)
class IndexConfig:
    """Which faiss index to use; 'auto' is exact up to `exact_max` tiles and IVF above."""

    kind: str = "auto"  # auto | flat | ivf | hnsw
    exact_max: int = 100_000
    nlist: int | None = None  # IVF lists; None: a power of two near 2 * sqrt(N)
    nprobe: int | None = None  # None: the smallest power of two reaching `target_recall` on perturbed tiles
    target_recall: float = 0.95
    calibration_noise: float = 0.3  # norm of the perturbation added to unit-norm tiles to make test queries
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"index kind must be auto, flat, ivf or hnsw, got {self.kind!r}")

    def kind_for(self, n: int) -> str:
        return self.kind if self.kind != "auto" else ("flat" if n <= self.exact_max else "ivf")


@dataclass
class FaissState:
    """A faiss index and the parameters it was built with (recorded in the manifest)."""

    index: object
    params: dict = field(default_factory=dict)


def _exact_topk(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    import faiss

    return faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(base), k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k."""
    k = exact.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(e)) / k for a, e in zip(approx, exact, strict=True)]))


def calibration_queries(base: np.ndarray, cfg: IndexConfig, n: int = 256) -> np.ndarray:
    """Perturbed copies of random tiles: queries near, but not on, stored points."""
    rng = np.random.default_rng(cfg.seed)
    q = base[rng.choice(len(base), size=min(n, len(base)), replace=False)].astype(np.float32)
    noise = rng.standard_normal(q.shape).astype(np.float32)
    q = q + cfg.calibration_noise * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def build_faiss(descriptors: np.ndarray, cfg: IndexConfig) -> FaissState:
    """Build the index kind `cfg` asks for at this size; approximate kinds are tuned and recorded."""
    import faiss

    n, dim = descriptors.shape
    kind = cfg.kind_for(n)
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    start = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(x)
        return FaissState(index, {"kind": "flat", "metric": "inner_product", "build_s": time.perf_counter() - start})
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
        index.add(x)
        params = {"kind": "hnsw", "M": cfg.hnsw_m, "efConstruction": cfg.ef_construction, "efSearch": cfg.ef_search}
    else:
        nlist = cfg.nlist or int(2 ** round(math.log2(max(16.0, 2 * math.sqrt(n)))))
        nlist = max(1, min(nlist, n // 8 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(cfg.seed)
        train = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        index.cp.seed = cfg.seed
        index.train(train)
        index.add(x)
        index.quantizer_trains_alone = 0
        params = {"kind": "ivf", "nlist": nlist, "trained_on": len(train), "nprobe": cfg.nprobe}
    params["metric"] = "inner_product"
    if kind == "ivf" and cfg.nprobe is None:
        queries = calibration_queries(x, cfg)
        exact = _exact_topk(queries, x, min(10, n))
        probe, recall = 1, 0.0
        while True:
            index.nprobe = probe
            recall = recall_at(index.search(queries, exact.shape[1])[1], exact)
            if recall >= cfg.target_recall or probe >= params["nlist"]:
                break
            probe = min(2 * probe, params["nlist"])
        params.update(nprobe=probe, calibration={
            "recall_at_10": recall, "target": cfg.target_recall, "queries": len(queries),
            "noise": cfg.calibration_noise,
        })  # fmt: skip
    elif kind == "ivf":
        index.nprobe = cfg.nprobe
    params["build_s"] = time.perf_counter() - start
    return FaissState(index, params)


def _apply_search_params(index, params: dict) -> None:
    if params.get("kind") == "ivf":
        index.nprobe = int(params["nprobe"])
    elif params.get("kind") == "hnsw":
        index.hnsw.efSearch = int(params["efSearch"])


# --- atomic folder writes -------------------------------------------------------------------------------


def _write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
        np.save(f, array)


def _write_tiles(path: str, tiles: Sequence[Tile]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TILE_COLUMNS)
        writer.writeheader()
        writer.writerows(t.as_row() for t in tiles)


def _read_tiles(path: Path) -> list[Tile]:
    with path.open(newline="", encoding="utf-8") as f:
        return [Tile.from_row(row) for row in csv.DictReader(f)]


class GalleryIndex:
    """Descriptors, tile metadata and a faiss index persisted together in one folder.

    Every save writes a new generation of data files and then atomically replaces the manifest
    that names them, so readers and crashes only ever see a complete generation.
    """

    def __init__(self, folder: str | Path, identity: ModelIdentity, config: IndexConfig | None = None) -> None:
        self.folder = Path(folder)
        self.identity = identity
        self.config = config or IndexConfig()
        self.tiles: list[Tile] = []
        self._descriptors = np.zeros((0, identity.dim), dtype=np.float32)
        self._faiss: FaissState | None = None
        self._files: dict[str, str] = {}
        self.generation = 0
        self._ids: set[str] = set()
        # per kind of stored reference features (reference_features.KINDS): what they were computed with, and
        # tile id -> reference_features.Entry, read on demand
        self.feature_settings: dict[str, dict] = {}
        self._features: dict[str, dict] = {}

    # --- construction -----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, folder: str | Path, identity: ModelIdentity, config: IndexConfig | None = None, overwrite: bool = False
    ) -> GalleryIndex:
        folder = Path(folder)
        if (folder / MANIFEST).exists() and not overwrite:
            raise ValueError(f"{folder} already holds a gallery index; use `index add` or pass --overwrite")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} exists and is not a folder")
        return cls(folder, identity, config)

    @classmethod
    def load(cls, folder: str | Path, expect: ModelIdentity | None = None) -> GalleryIndex:
        """Open a saved index; with `expect`, refuse one built by a different model or input size."""
        import faiss

        folder = Path(folder)
        path = folder / MANIFEST
        if folder.is_file():
            raise ValueError(f"{folder} is a file; a gallery index is a folder (made by `index build`)")
        if not folder.exists():
            raise FileNotFoundError(f"gallery index {folder} does not exist; create one with `index build`")
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a gallery index (no {MANIFEST}); create one with `index build`")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc})") from exc
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} manifest (format {manifest.get('format')!r})")
        identity = ModelIdentity(**manifest["model"])
        if expect is not None and (diff := identity.mismatch(expect)):
            raise ValueError(
                f"gallery index {folder} was built with a different model than the one given (index vs given: {diff}); "
                "rebuild the index or use the model it was built with"
            )
        self = cls(folder, identity, IndexConfig(**manifest["config"]))
        self.generation = int(manifest["generation"])
        self._files = dict(manifest["files"])
        missing = [name for name in self._files.values() if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"gallery index {folder} is incomplete: {', '.join(missing)} missing")
        self.feature_settings = {kind: manifest[key] for kind, key in reference_features.MANIFEST_KEYS.items()
                                 if manifest.get(key) is not None}  # fmt: skip
        self.tiles = _read_tiles(folder / self._files["tiles"])
        self._ids = {t.id for t in self.tiles}
        self._descriptors = None  # loaded on demand: search needs only faiss
        index = faiss.read_index(str(folder / self._files["faiss"]))
        params = dict(manifest["index"])
        _apply_search_params(index, params)
        self._faiss = FaissState(index, params)
        if not (len(self.tiles) == index.ntotal == manifest["count"]):
            raise ValueError(
                f"gallery index {folder} is inconsistent: {len(self.tiles)} tiles, {index.ntotal} indexed vectors, "
                f"manifest says {manifest['count']}; rebuild it"
            )
        return self

    # --- content ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tiles)

    def has(self, tile_id: str) -> bool:
        """Whether a tile of this id is in the index."""
        return tile_id in self._ids

    @property
    def descriptors(self) -> np.ndarray:
        if self._descriptors is None:
            self._descriptors = np.load(self.folder / self._files["descriptors"], mmap_mode="r")
        return self._descriptors

    @property
    def reference_settings(self) -> dict | None:
        """What the stored learned reference features were computed with (None: none stored)."""
        return self.feature_settings.get(LEARNED_KIND)

    def reference_features(self, kind: str = LEARNED_KIND) -> dict:
        """Stored features of the tiles' registration windows by tile id, of one kind (reference_features.KINDS;
        empty for an index built before they were stored)."""
        if kind not in self._features:
            name = self._files.get(reference_features.FILE_KEYS[kind])
            self._features[kind] = reference_features.read(str(self.folder / name), kind) if name else {}
        return self._features[kind]

    def add_reference_features(self, entries: dict, settings: dict,
                               kind: str = LEARNED_KIND) -> None:  # fmt: skip
        """Store reference features of one kind for tiles; settings other than those already stored replace them
        all."""
        kept = self.reference_features(kind) if self.feature_settings.get(kind) in (None, settings) else {}
        self._features[kind] = {**kept, **entries}
        self.feature_settings[kind] = settings

    def _feature_count(self, kind: str) -> int:
        """Tiles with stored features of `kind`, without reading them (about 1 MB a tile for SIFT's)."""
        if kind in self._features:
            return len(self._features[kind])
        name = self._files.get(reference_features.FILE_KEYS[kind])
        return reference_features.count(str(self.folder / name)) if name else 0

    @property
    def index_params(self) -> dict:
        return dict(self._faiss.params) if self._faiss else {"kind": "none"}

    def add(self, tiles: Sequence[Tile], descriptors: np.ndarray) -> None:
        """Append tiles and their descriptors; the faiss index grows in place or is rebuilt when its kind changes."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape != (len(tiles), self.identity.dim):
            raise ValueError(
                f"expected descriptors of shape ({len(tiles)}, {self.identity.dim}), got {tuple(descriptors.shape)}"
            )
        if not np.all(np.isfinite(descriptors)):
            raise ValueError("descriptors contain NaN or infinite values")
        norms = np.linalg.norm(descriptors, axis=1)
        if np.any(np.abs(norms - 1) > 1e-3):
            raise ValueError("descriptors must be L2-normalised (inner product = cosine)")
        new_ids = [t.id for t in tiles]
        dup = next((i for i in new_ids if i in self._ids), None)
        if dup is None and len(set(new_ids)) != len(new_ids):
            dup = next(i for i in new_ids if new_ids.count(i) > 1)
        if dup is not None:
            raise ValueError(f"tile id {dup!r} is already in the gallery; ids must be unique")
        if not tiles:
            return
        self._descriptors = np.concatenate([np.asarray(self.descriptors), descriptors])
        self.tiles = [*self.tiles, *tiles]
        self._ids.update(new_ids)
        n = len(self.tiles)
        current = self._faiss.params.get("kind") if self._faiss else None
        if current == self.config.kind_for(n) and current in ("flat", "hnsw", "ivf"):
            self._faiss.index.add(descriptors)
        else:
            self._faiss = build_faiss(self._descriptors, self.config)

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine scores and tile positions for each query descriptor."""
        if not len(self):
            raise ValueError("the gallery index is empty")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.identity.dim:
            raise ValueError(f"query descriptors are {queries.shape[1]}-d, the gallery is {self.identity.dim}-d")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return self._faiss.index.search(queries, min(k, len(self)))

    # --- persistence ------------------------------------------------------------------------------------

    def save(self) -> Path:
        """Write a new generation of files, switch the manifest to it atomically, then drop the old one."""
        import faiss

        if self._faiss is None:
            raise ValueError("nothing to save: the gallery index is empty")
        self.folder.mkdir(parents=True, exist_ok=True)
        gen = self.generation + 1
        files = {"descriptors": f"descriptors.{gen}.npy", "tiles": f"tiles.{gen}.csv", "faiss": f"index.{gen}.faiss"}
        desc = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        atomic_write(self.folder / files["descriptors"], lambda p: _write_npy(p, desc))
        atomic_write(self.folder / files["tiles"], lambda p: _write_tiles(p, self.tiles))
        atomic_write(self.folder / files["faiss"], lambda p: faiss.write_index(self._faiss.index, p))
        for kind in self.feature_settings:
            key = reference_features.FILE_KEYS[kind]
            files[key] = f"{key}.{gen}.npz"
            entries = self.reference_features(kind)
            atomic_write(self.folder / files[key], lambda p, e=entries, k=kind: reference_features.write(p, e, k))
        manifest = {
            "format": FORMAT,
            "generation": gen,
            "count": len(self),
            "model": asdict(self.identity),
            "config": asdict(self.config),
            "index": self._faiss.params,
            "files": files,
            **{reference_features.MANIFEST_KEYS[kind]: v for kind, v in self.feature_settings.items()},
            "sources": sorted({t.source for t in self.tiles}),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(self.folder / MANIFEST, manifest)  # numpy numbers (faiss calibration) as Python ones
        old = set(self._files.values())
        self.generation, self._files = gen, files
        for name in old - set(files.values()):
            (self.folder / name).unlink(missing_ok=True)
        return self.folder

    def info(self) -> dict:
        """Summary for `index info`: size, model, index kind and parameters, extent of the tiles."""
        lat = np.array([t.latitude for t in self.tiles])
        lon = np.array([t.longitude for t in self.tiles])
        out = {
            "folder": str(self.folder),
            "count": len(self),
            "model": asdict(self.identity),
            "index": self.index_params,
            "sources": sorted({t.source for t in self.tiles}),
            "generation": self.generation,
            "with_reference": sum(1 for t in self.tiles if t.ref_image and t.ref_affine is not None),
            **{key: (dict(self.feature_settings[kind], tiles=self._feature_count(kind))
                     if kind in self.feature_settings else None)
               for kind, key in reference_features.MANIFEST_KEYS.items()},
        }
        if len(self):
            out["extent"] = {
                "lat_min": float(lat.min()), "lat_max": float(lat.max()),
                "lon_min": float(lon.min()), "lon_max": float(lon.max()),
            }  # fmt: skip
        return out
