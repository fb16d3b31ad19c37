"""Registration end to end on a tiny rendered world: photo -> verified tile -> camera position in metres."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikevimformer.cli import main
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.geo.localize import open_localizer
from spikevimformer.geo.tiles import world_tiles
from spikevimformer.geo.windows import read_window
from spikevimformer.geodesy import LocalFrame, haversine_m
from spikevimformer.registration import RegisterConfig, Registrar

K = "9"  # the whole gallery: every candidate is verified, so re-ranking alone decides


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reg")
    cfg = SynthConfig(seed=7, locations=16, views=2, image_size=256, test_fraction=0.4)
    generate_world(cfg, root / "world")
    assert main(["index", "build", "--out", str(root / "idx"), "--world", str(root / "world"),
                 "--image-size", "32", "--random-init"]) == 0  # fmt: skip
    return root / "world", root / "idx"


def _truth(world: Path) -> dict[str, dict]:
    with (world / "cameras.csv").open(newline="") as f:
        return {row["image"]: row for row in csv.DictReader(f) if "query_drone" in row["image"]}


def _localize(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["localize", *argv, "--json", "--random-init"]) == 0
    return json.loads(capsys.readouterr().out)


def test_world_tiles_carry_native_reference(world) -> None:
    root, _ = world
    tiles = world_tiles(root)
    assert all(t.ref_image.endswith("ortho.jpg") and t.ref_affine is not None for t in tiles)
    window = read_window(tiles[0], margin=0.5, max_px=4096)
    assert window.gray.shape in ((400, 400), (401, 401))  # 100 m + 2 x 50 m at the world's 0.5 m/px, native
    assert window.metres_per_px == pytest.approx(0.5, rel=1e-3)
    mid = (window.gray.shape[0] - 1) / 2
    centre = window.to_ground @ np.array([mid, mid, 1.0])
    np.testing.assert_allclose(centre, [0.0, 0.0], atol=0.5)  # the window is centred on the tile


def test_camera_fix_from_exif(world, capsys) -> None:
    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    (res,) = _localize(capsys, str(root / rel), "--index", str(idx), "-k", K)["results"]
    truth = _truth(root)[rel]
    assert res["fix"] and res["reason"] == "" and res["intrinsics"].startswith("exif")
    cam = res["camera"]
    err = float(haversine_m(float(truth["latitude"]), float(truth["longitude"]), cam["latitude"], cam["longitude"]))
    assert err < 3.0 and err <= res["radius_m"] + 1.0
    assert cam["height_m"] == pytest.approx(float(truth["altitude_m"]), abs=3.0)
    assert abs((cam["heading_deg"] - float(truth["heading_deg"]) + 180) % 360 - 180) < 2.0
    assert cam["pitch_deg"] == pytest.approx(float(truth["pitch_deg"]), abs=2.0)
    look = float(haversine_m(float(truth["target_latitude"]), float(truth["target_longitude"]),
                             res["look_at"]["latitude"], res["look_at"]["longitude"]))  # fmt: skip
    assert look < 3.0 and len(res["footprint"]) == 4
    assert res["estimate"]["source"] == "camera" and res["estimate"]["latitude"] == cam["latitude"]
    top = min(res["matches"], key=lambda m: m["verified_rank"])
    assert top["id"] == "0008" and top["inliers"] >= 12


def test_evaluate_reranks_and_measures_the_camera(world, capsys) -> None:
    root, idx = world
    rep = _localize(capsys, "--index", str(idx), "--evaluate", str(root), "-k", K)
    assert rep["queries"] == 12 and rep["gallery"] == 9
    # random weights retrieve badly; verification by inliers puts the right tile first far more often
    assert rep["R@1_verified"] >= rep["R@1"] + 0.25
    assert rep["fix_rate"] >= 0.4 and rep["camera_within_5m"] >= 0.3 and rep["false_fix_rate"] == 0.0
    assert rep["camera_median_error_m"] < rep["median_top1_error_m"]
    for key in ("look_at_median_error_m", "look_at_within_5m", "heading_median_error_deg", "radius95_coverage"):
        assert key in rep
    plain = _localize(capsys, "--index", str(idx), "--evaluate", str(root), "-k", K, "--no-register")
    assert "fix_rate" not in plain and plain["R@1"] == rep["R@1"]


def test_without_focal_length_look_at_only_then_fov(world, capsys, tmp_path) -> None:
    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    bare = tmp_path / "bare.png"
    Image.open(root / rel).convert("RGB").save(bare)  # PNG without EXIF
    (res,) = _localize(capsys, str(bare), "--index", str(idx), "-k", K)["results"]
    assert not res["fix"] and res["camera"] is None and "focal length" in res["reason"]
    assert res["look_at"] is not None and res["estimate"]["source"] == "tiles"
    fov = _truth(root)[rel]["fov_deg"]
    (res,) = _localize(capsys, str(bare), "--index", str(idx), "-k", K, "--fov", fov)["results"]
    assert res["fix"] and res["intrinsics"] == f"--fov {float(fov):g}"


def test_photos_that_match_nothing_or_lie_about_the_lens(world, capsys, tmp_path) -> None:
    root, idx = world
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(noise)
    (res,) = _localize(capsys, str(noise), "--index", str(idx), "-k", K)["results"]
    assert not res["fix"] and res["camera"] is None and res["reason"]
    liar = tmp_path / "liar.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 1  # a 1 mm "35 mm equivalent" lens
    Image.open(root / "University-1652/test/query_drone/0008/image-01.jpeg").save(liar, exif=exif.tobytes())
    capsys.readouterr()
    assert main(["localize", str(liar), "--index", str(idx), "--random-init"]) == 2
    assert "FocalLengthIn35mmFilm 1 mm" in capsys.readouterr().err
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (40, 40)).save(tiny)
    assert main(["localize", str(tiny), "--index", str(idx), "--random-init"]) == 2
    assert "at least 64 px" in capsys.readouterr().err
    assert main(["localize", str(tmp_path), "--index", str(idx), "--random-init"]) == 2
    assert "is a folder, not an image" in capsys.readouterr().err


def test_greyscale_16bit_and_rotated_photos_register(world, capsys, tmp_path) -> None:
    root, idx = world
    src = Image.open(root / "University-1652/test/query_drone/0008/image-01.jpeg")
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.asarray(src.convert("L"), dtype=np.uint16) * 257).save(grey16)
    rotated = tmp_path / "rotated.jpg"
    exif = src.getexif()
    exif[0x0112] = 6  # stored sideways; a viewer turns it 90 degrees clockwise
    src.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif.tobytes(), quality=95)
    out = _localize(capsys, str(grey16), str(rotated), "--index", str(idx), "-k", K, "--fov",
                    _truth(root)["University-1652/test/query_drone/0008/image-01.jpeg"]["fov_deg"])  # fmt: skip
    for res in out["results"]:
        assert res["fix"], res["reason"]
    a, b = (r["camera"] for r in out["results"])
    assert float(haversine_m(a["latitude"], a["longitude"], b["latitude"], b["longitude"])) < 3.0


def test_index_without_reference_imagery_says_rebuild(world) -> None:
    _, idx = world
    loc = open_localizer(str(idx), k=3, register=RegisterConfig(), random_init=True)
    loc.index.tiles = [replace(t, ref_image="", ref_affine=None) for t in loc.index.tiles]
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (80, 90, 70)).save(buf, "PNG")
    (res,) = loc.localize([Image.open(io.BytesIO(buf.getvalue())).convert("RGB")])
    assert not res.fix and "rebuild" in res.reason and res.matches  # tile-level answer still given


def test_local_frame_round_trip_of_the_window_affine(world) -> None:
    root, _ = world
    tile = world_tiles(root)[2]
    a = np.asarray(tile.ref_affine).reshape(2, 3)
    meta = json.loads((root / "world.json").read_text())
    col, row = 17.0, 2345.0
    lat = meta["origin_latitude"] - (row + 0.5) * meta["ground_resolution_m"] / (6_371_008.8 * np.pi / 180)
    east, north = a @ [col, row, 1.0]
    lat2, _ = LocalFrame(tile.latitude, tile.longitude).to_geo(east, north)
    assert float(lat2) == pytest.approx(lat, abs=1e-8)


def test_orb_features_register_too(world, capsys) -> None:
    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    (res,) = _localize(capsys, str(root / rel), "--index", str(idx), "-k", K, "--features", "orb")["results"]
    truth = _truth(root)[rel]
    cam = res["camera"]
    assert res["fix"] and haversine_m(float(truth["latitude"]), float(truth["longitude"]), cam["latitude"],
                                      cam["longitude"]) < 5.0  # fmt: skip


def test_serve_answers_with_the_camera_and_takes_a_lens_per_request(world, tmp_path) -> None:
    import httpx

    from spikevimformer.geo.serve import create_app
    from tests.live_server import live_server

    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    fov = _truth(root)[rel]["fov_deg"]
    buf = io.BytesIO()
    Image.open(root / rel).convert("RGB").save(buf, "PNG")  # no EXIF
    bare = buf.getvalue()
    liar = io.BytesIO()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 1
    Image.open(root / rel).save(liar, "JPEG", exif=exif.tobytes())
    with live_server(create_app(open_localizer(str(idx), k=9, random_init=True))) as url:
        sent = httpx.post(f"{url}/localize", files={"image": ("p.jpeg", (root / rel).read_bytes(), "image/jpeg")})
        assert sent.status_code == 200 and sent.json()["fix"] and sent.json()["camera"]["height_m"] > 100
        plain = httpx.post(f"{url}/localize", content=bare, headers={"content-type": "image/png"}).json()
        assert not plain["fix"] and "?fov=" in plain["reason"] and plain["look_at"] is not None
        lens = httpx.post(f"{url}/localize?fov={fov}", content=bare, headers={"content-type": "image/png"}).json()
        assert lens["fix"] and lens["intrinsics"].startswith("?fov=")  # named as it was given
        bad = httpx.post(f"{url}/localize?fov=500", content=bare, headers={"content-type": "image/png"})
        assert bad.status_code == 400 and "field of view" in bad.json()["detail"]
        refused = httpx.post(f"{url}/localize", content=liar.getvalue(), headers={"content-type": "image/jpeg"})
        assert refused.status_code == 400 and "FocalLengthIn35mmFilm 1 mm" in refused.json()["detail"]
        rescued = httpx.post(f"{url}/localize?fov={fov}", content=liar.getvalue(),
                             headers={"content-type": "image/jpeg"}).json()  # fmt: skip
        assert rescued["fix"] and "EXIF refused" in rescued["intrinsics"]


def test_one_unreadable_photo_does_not_cost_the_others_their_answers(world, capsys, tmp_path) -> None:
    root, idx = world
    good = root / "University-1652/test/query_drone/0008/image-01.jpeg"
    capsys.readouterr()
    assert main(["localize", str(good), str(tmp_path / "missing.jpg"), "--index", str(idx), "-k", K, "--json",
                 "--random-init"]) == 2  # fmt: skip
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out["results"]) == 1 and out["results"][0]["fix"]
    assert out["errors"][0]["image"].endswith("missing.jpg") and "does not exist" in captured.err


def _photo(root: Path, rel: str) -> tuple[Image.Image, float, object]:
    from spikevimformer.geo.imaging import open_photo

    img, exif = open_photo(str(root / rel))
    return img, float(_truth(root)[rel]["heading_deg"]), exif


@pytest.mark.parametrize("turn", [90, 180])
def test_learned_features_register_turned_photos_with_and_without_a_heading(world, turn: int) -> None:
    from spikevimformer.registration.priors import Prior

    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    img, heading, exif = _photo(root, rel)
    loc = open_localizer(str(idx), k=9, register=RegisterConfig(features="xfeat"), random_init=True)
    intr = loc.intrinsics(img, exif, rel)
    # turned counter-clockwise by `turn`: what was on the right is now up, `turn` degrees further clockwise
    turned = img.rotate(turn, expand=True)
    truth = _truth(root)[rel]
    for prior in (Prior(heading_deg=(heading + turn) % 360), None):
        (res,) = loc.localize([turned], [rel], intrinsics=[intr], priors=[prior])  # square photos: same lens
        assert res.fix, (prior, res.reason)
        err = float(haversine_m(float(truth["latitude"]), float(truth["longitude"]), res.camera["latitude"],
                                res.camera["longitude"]))  # fmt: skip
        assert err < 3.0 and err <= res.radius_m
        assert abs((res.orientation_deg - (heading + turn) + 180) % 360 - 180) <= 360 / 8 / 2 + 1e-6


def test_an_index_without_stored_learned_features_answers_with_sift_and_says_so(world, tmp_path) -> None:
    root, _ = world
    old = tmp_path / "old-index"
    assert main(["index", "build", "--out", str(old), "--world", str(root), "--image-size", "32", "--random-init",
                 "--no-reference-features"]) == 0  # fmt: skip
    loc = open_localizer(str(old), k=9, random_init=True)
    assert loc.registrar.learned is None and any("SIFT alone" in note for note in loc.notes)
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    (res,) = loc.localize_files([str(root / rel)])
    assert res.fix
    stored = open_localizer(str(world[1]), k=9, random_init=True)
    assert stored.registrar.learned is not None and not any("SIFT alone" in note for note in stored.notes)
    mnn = open_localizer(str(world[1]), k=9, register=RegisterConfig(features="xfeat-mnn"), random_init=True)
    assert not any("other settings" in note for note in mnn.notes)  # the same XFeat features serve both


def test_reference_features_survive_save_and_load(world) -> None:
    from spikevimformer.geo.index import GalleryIndex

    _, idx = world
    index = GalleryIndex.load(str(idx))
    stored = index.reference_features()
    assert set(stored) == {t.id for t in index.tiles} and index.reference_settings["matcher"] == "xfeat"
    full, coarse, scale = stored[index.tiles[0].id]
    assert len(full) > 100 and full.descriptors.shape[1] == 64 and 0 < scale <= 1 and len(coarse) > 50
    assert np.allclose(np.linalg.norm(full.descriptors, axis=1), 1.0, atol=1e-2)  # fp16 round trip


def test_stored_sift_features_are_exact_and_serve_the_query_as_computed_ones_would(world) -> None:
    from spikevimformer.geo.index import GalleryIndex

    root, idx = world
    index = GalleryIndex.load(str(idx))
    sift = index.reference_features("invariant")
    assert set(sift) == {t.id for t in index.tiles} and index.feature_settings["invariant"]["matcher"] == "sift"
    tile = index.tiles[0]
    stored, coarse, _ = sift[tile.id]
    cfg = RegisterConfig()
    fresh = Registrar(RegisterConfig(features="sift"))
    computed, _, _ = fresh.reference(read_window(tile, cfg.margin, cfg.reference_max_px), fresh.invariant)
    assert coarse is None and stored.descriptors.dtype == np.uint8 and len(stored) > 100
    assert np.array_equal(stored.keypoints, computed.keypoints)
    assert np.array_equal(stored.descriptors.astype(np.float32), computed.descriptors)  # whole numbers: exact
    loc = open_localizer(str(idx), k=int(K), random_init=True)
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    (with_stored,) = loc.localize_files([str(root / rel)])
    assert loc.registrar._stored and all(name in ("sift", "xfeat") for _, name in loc.registrar._stored)
    loc.registrar._stored.clear()  # every window described again for this photo
    (recomputed,) = loc.localize_files([str(root / rel)])
    assert with_stored.fix and with_stored.camera == recomputed.camera and with_stored.inliers == recomputed.inliers


def test_a_photo_with_a_malformed_xmp_packet_is_answered_with_a_warning(world, capsys, tmp_path) -> None:
    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    src = Image.open(root / rel)
    bad = tmp_path / "bad-xmp.jpg"
    src.save(bad, exif=src.getexif().tobytes(), xmp=b"<x:xmpmeta><broken", quality=95)
    (res,) = _localize(capsys, str(bad), "--index", str(idx), "-k", K)["results"]
    assert res["fix"] and any("bad-xmp.jpg: its XMP packet is malformed" in w for w in res["warnings"])


def test_without_a_verified_candidate_retrieval_order_stands(world, tmp_path) -> None:
    _, idx = world
    loc = open_localizer(str(idx), k=5, random_init=True)
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    (res,) = loc.localize([noise])
    assert not res.fix
    assert [m.verified_rank for m in res.matches] == [m.rank for m in res.matches]


def test_a_photo_expected_where_a_flight_predicts_registers_without_the_orientation_search(world, monkeypatch) -> None:
    from spikevimformer.geo.localize import Region
    from spikevimformer.registration.register import Registrar as R

    root, idx = world
    rel = "University-1652/test/query_drone/0008/image-01.jpeg"
    img, heading, exif = _photo(root, rel)
    loc = open_localizer(str(idx), k=9, register=RegisterConfig(features="xfeat"), random_init=True)
    intr = loc.intrinsics(img, exif, rel)
    (first,) = loc.localize([img], [rel], intrinsics=[intr])
    assert first.fix and first.footprint
    truth = _truth(root)[rel]
    frame = LocalFrame(first.camera["latitude"], first.camera["longitude"])

    def shifted(east: float, north: float) -> Region:  # the fix's footprint, moved as a drifting motion would
        en = np.array([frame.to_local(lat, lon) for lat, lon in first.footprint]) + [east, north]
        corners = tuple(zip(*frame.to_geo(en[:, 0], en[:, 1]), strict=True))
        return Region(first.camera["latitude"], first.camera["longitude"], 150.0, corners)

    calls = []
    coarse = R._coarse
    monkeypatch.setattr(R, "_coarse", lambda self, *a: calls.append(a) or coarse(self, *a))
    (guided,) = loc.localize([img], [rel], intrinsics=[intr], regions=[shifted(4.0, -3.0)])
    assert guided.fix and guided.features == "xfeat" and not calls  # no orientation was searched
    err = float(haversine_m(float(truth["latitude"]), float(truth["longitude"]), guided.camera["latitude"],
                            guided.camera["longitude"]))  # fmt: skip
    assert err < 3.0 and err <= guided.radius_m
    assert abs((guided.orientation_deg - heading + 180) % 360 - 180) < 5.0
    (astray,) = loc.localize([img], [rel], intrinsics=[intr], regions=[shifted(200.0, 200.0)])
    assert calls and astray.fix  # a guess that misses: the orientation search as before
    assert float(haversine_m(float(truth["latitude"]), float(truth["longitude"]), astray.camera["latitude"],
                             astray.camera["longitude"])) < 3.0  # fmt: skip
