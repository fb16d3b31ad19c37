from __future__ import annotations

import json

import numpy as np
import pytest

from spikevimformer.geo import index as index_mod
from spikevimformer.geo.index import GalleryIndex, IndexConfig, ModelIdentity, build_faiss, recall_at
from spikevimformer.geo.tiles import Tile

IDENT = ModelIdentity("tiny", "random-init:seed=0", 32, 16)


def _tiles(n: int, start: int = 0) -> list[Tile]:
    return [Tile(f"t{i}", 47 + i * 1e-3, 8.0, 100.0, "test", f"/nowhere/{i}.jpg") for i in range(start, start + n)]


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(n: int, dim: int = 16, centres: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = _unit(centres, dim, seed + 1)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_build_save_load_search(tmp_path) -> None:
    desc = _unit(12)
    idx = GalleryIndex.create(tmp_path / "g", IDENT)
    idx.add(_tiles(12), desc)
    idx.save()
    loaded = GalleryIndex.load(tmp_path / "g", expect=IDENT)
    assert len(loaded) == 12 and loaded.index_params["kind"] == "flat"
    scores, found = loaded.search(desc[[3, 7]], k=3)
    assert list(found[:, 0]) == [3, 7]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(loaded.descriptors), desc)
    assert loaded.tiles[3] == _tiles(12)[3]
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["model"]["checkpoint_sha256"] == "random-init:seed=0" and manifest["count"] == 12


def test_mismatched_model_refused(tmp_path) -> None:
    idx = GalleryIndex.create(tmp_path / "g", IDENT)
    idx.add(_tiles(3), _unit(3))
    idx.save()
    other = ModelIdentity("tiny", "ab" * 32, 32, 16)
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        GalleryIndex.load(tmp_path / "g", expect=other)
    with pytest.raises(ValueError, match="image_size 32 vs 64"):
        GalleryIndex.load(tmp_path / "g", expect=ModelIdentity("tiny", "random-init:seed=0", 64, 16))
    with pytest.raises(ValueError, match="already holds"):
        GalleryIndex.create(tmp_path / "g", IDENT)


def test_bad_input_rejected(tmp_path) -> None:
    idx = GalleryIndex.create(tmp_path / "g", IDENT)
    with pytest.raises(ValueError, match="shape"):
        idx.add(_tiles(2), _unit(3))
    with pytest.raises(ValueError, match="L2-normalised"):
        idx.add(_tiles(2), 2 * _unit(2))
    idx.add(_tiles(2), _unit(2))
    with pytest.raises(ValueError, match="already in the gallery"):
        idx.add(_tiles(1, start=1), _unit(1))
    with pytest.raises(FileNotFoundError, match="does not exist; create one with `index build`"):
        GalleryIndex.load(tmp_path / "nothing")


def test_incremental_add_and_generations(tmp_path) -> None:
    a, b = _unit(5, seed=1), _unit(4, seed=2)
    idx = GalleryIndex.create(tmp_path / "g", IDENT)
    idx.add(_tiles(5), a)
    idx.save()
    again = GalleryIndex.load(tmp_path / "g", expect=IDENT)
    again.add(_tiles(4, start=5), b)
    again.save()
    final = GalleryIndex.load(tmp_path / "g")
    assert len(final) == 9 and final.generation == 2
    assert list(final.search(b, 1)[1][:, 0]) == [5, 6, 7, 8]
    files = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert files == ["descriptors.2.npy", "index.2.faiss", "manifest.json", "tiles.2.csv"]


def test_interrupted_save_keeps_previous_generation(tmp_path, monkeypatch) -> None:
    idx = GalleryIndex.create(tmp_path / "g", IDENT)
    idx.add(_tiles(3), _unit(3))
    idx.save()
    idx.add(_tiles(2, start=3), _unit(2, seed=5))
    import faiss

    def crash(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(OSError, match="disk full"):
        idx.save()
    monkeypatch.undo()
    survivor = GalleryIndex.load(tmp_path / "g")
    assert len(survivor) == 3 and survivor.generation == 1
    assert not [p for p in (tmp_path / "g").iterdir() if p.name.startswith(".")]  # no temp files left


def test_auto_switches_to_ivf_and_keeps_recall(tmp_path) -> None:
    desc = _clustered(3000)
    cfg = IndexConfig(exact_max=1000)
    idx = GalleryIndex.create(tmp_path / "g", IDENT, cfg)
    tiles = _tiles(3000)
    idx.add(tiles[:800], desc[:800])
    assert idx.index_params["kind"] == "flat"
    idx.add(tiles[800:], desc[800:])
    params = idx.index_params
    assert params["kind"] == "ivf" and params["nprobe"] >= 1 and params["calibration"]["recall_at_10"] >= 0.95
    idx.save()
    loaded = GalleryIndex.load(tmp_path / "g")
    assert loaded._faiss.index.nprobe == params["nprobe"]
    queries = _clustered(100, seed=9)
    exact = index_mod._exact_topk(queries, desc, 10)
    assert recall_at(loaded.search(queries, 10)[1], exact) >= 0.9


def test_hnsw_kind() -> None:
    desc = _clustered(500)
    state = build_faiss(desc, IndexConfig(kind="hnsw", hnsw_m=16))
    assert state.params["kind"] == "hnsw" and state.params["M"] == 16
    found = state.index.search(desc[:20], 1)[1][:, 0]
    assert (found == np.arange(20)).mean() >= 0.95
