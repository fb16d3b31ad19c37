from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from spikevimformer import build_model, save_checkpoint
from spikevimformer.cli import main
from spikevimformer.geo.encoders import TorchEncoder
from spikevimformer.geo.fallback import TileFallback
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import Localization, Localizer, Match, Region, estimate_position
from spikevimformer.geo.metrics import (
    Query,
    distance_metrics,
    evaluate_localizer,
    format_report,
    load_queries,
    registration_metrics,
    truth_hint,
)
from spikevimformer.geodesy import LocalFrame, haversine_m
from spikevimformer.registration import RegisterConfig
from tests.geo_world import FOOTPRINT_M, make_world, tile_image

SIZE = "32"


@pytest.fixture(scope="module")
def world_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("geo")
    world = make_world(root / "world")
    assert main(["index", "build", "--out", str(root / "idx"), "--world", str(world), "--image-size", SIZE,
                 "--random-init"]) == 0  # fmt: skip
    return world, root / "idx"


def _run_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_position_top_tile_and_calibrated_radius() -> None:
    a = Match(1, "a", 0.9, 47.0, 8.0, 100.0)
    b = Match(2, "b", 0.5, 47.001, 8.0, 100.0)
    lat, lon, radius, elsewhere = estimate_position([a, b], None)  # uncalibrated: the spread, at least half a tile
    assert (lat, lon) == (47.0, 8.0) and not elsewhere
    assert radius == pytest.approx(float(haversine_m(47.0, 8.0, 47.001, 8.0)) / 2**0.5, rel=1e-3)
    layout = np.array([(47.0 + 0.001 * i, 8.0) for i in range(21)])  # 20 other tiles, 111 m apart, due north
    cal = TileFallback("x", 64, (0.6,), (0.5, 0.96), right_radius_footprints=1.5, elsewhere_below=0.55)
    assert estimate_position([a, b], cal, layout) == (47.0, 8.0, 150.0, False)  # top-1 right 96 %: the stand-off
    lat, _, radius, elsewhere = estimate_position([replace(a, score=0.5), b], cal, layout)
    # right half the time: of the wrong half, 90 % must be held: 18 of the 20 others, the 18th is 18 x 111 m away
    assert radius == pytest.approx(float(haversine_m(47.0, 8.0, 47.018, 8.0)) + 150.0, rel=1e-6) and elsewhere
    assert estimate_position([replace(a, score=0.5), b], cal, layout, registered=True)[3] is False
    lat, *_ = estimate_position([replace(a, verified_rank=2), replace(b, verified_rank=1)], cal, layout)
    assert lat == 47.001  # verification re-ranked the candidates: the one it put first answers


def test_index_info_cli(world_index, capsys) -> None:
    _, idx = world_index
    info = _run_json(capsys, ["index", "info", str(idx), "--json"])
    assert info["count"] == 7 and info["index"]["kind"] == "flat"
    assert info["model"] == {"variant": "tiny", "checkpoint_sha256": "random-init:seed=0+bn-calibrated",
                             "image_size": 32, "dim": 240, "weights": ""}  # fmt: skip


def test_localize_cli_json(world_index, capsys) -> None:
    world, idx = world_index
    query = world / "University-1652/test/query_drone/0004/image-01.png"
    out = _run_json(capsys, ["localize", str(query), "--index", str(idx), "-k", "3", "--json", "--random-init"])
    (res,) = out["results"]
    assert res["matches"][0]["id"] == "0004" and len(res["matches"]) == 3
    assert [m["rank"] for m in res["matches"]] == [1, 2, 3]
    assert res["matches"][0]["score"] >= res["matches"][1]["score"]
    top = res["matches"][0]
    est = res["estimate"]
    err = float(haversine_m(top["latitude"], top["longitude"], est["latitude"], est["longitude"]))
    assert err < 5 and res["estimate"]["radius_m"] >= FOOTPRINT_M / 2 and res["model_s"] > 0
    assert main(["localize", str(query), "--index", str(idx), "--random-init"]) == 0
    assert "0004" in capsys.readouterr().out


def test_evaluate_cli(world_index, capsys, tmp_path) -> None:
    world, idx = world_index
    rep = _run_json(capsys, ["localize", "--index", str(idx), "--evaluate", str(world), "--json",
                             "--out", str(tmp_path / "r.json"), "--random-init"])  # fmt: skip
    assert rep["queries"] == 5 and rep["gallery"] == 7 and rep["R@1"] == 1.0
    assert rep["Dis@1_m"] == pytest.approx(10.0, abs=0.1)  # the cameras sit 10 m north of the tile centres
    assert rep["within_25m"] == 1.0 and rep["SDM@1"] == pytest.approx(float(torch.exp(torch.tensor(-0.01))), 1e-3)
    assert json.loads((tmp_path / "r.json").read_text())["R@1"] == 1.0
    centres = load_queries(world, truth="location")  # a CSV of image centres (the tiles'), as UAV-VisLoc's
    csv_path = _truth_csv(tmp_path / "centres.csv", "image,latitude,longitude",
                          *(f"{q.image},{q.latitude},{q.longitude}" for q in centres))  # fmt: skip
    loc = _run_json(capsys, ["localize", "--index", str(idx), "--evaluate", str(csv_path), "--json", "--truth",
                             "look-at", "--sdm", "denseuav", "--random-init"])  # fmt: skip
    assert loc["Dis@1_m"] == pytest.approx(0.0, abs=1e-6) and loc["SDM@1"] == 1.0
    assert (loc["truth"], loc["sdm"], rep["sdm"]) == ("look-at", "s=5e3/deg, DenseUAV", "s=1e-3/m, GTA-UAV")


def test_onnx_backend_agrees(world_index, tmp_path, capsys) -> None:
    world, idx = world_index
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--random-init", "--variant", "tiny", "--image-size", SIZE, "--out", str(onnx_path)]) == 0
    rep = _run_json(capsys, ["localize", "--index", str(idx), "--onnx", str(onnx_path), "--evaluate", str(world),
                             "--json"])  # fmt: skip
    assert rep["backend"] == "onnxruntime" and rep["R@1"] == 1.0
    query = str(world / "University-1652/test/query_drone/0002/image-01.png")
    a = _run_json(capsys, ["localize", query, "--index", str(idx), "--json", "--random-init"])["results"][0]["matches"]
    b = _run_json(capsys, ["localize", query, "--index", str(idx), "--onnx", str(onnx_path), "--json"])
    b = b["results"][0]["matches"]
    assert [m["id"] for m in a] == [m["id"] for m in b]
    assert [m["score"] for m in a] == pytest.approx([m["score"] for m in b], abs=1e-3)


def test_an_index_built_with_onnx_loads_that_model_again(world_index, tmp_path, capsys) -> None:
    world, _ = world_index
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", "pretrained", "--image-size", SIZE, "--check-images", "0",
                 "--out", str(onnx_path)]) == 0  # fmt: skip
    idx = tmp_path / "idx"
    assert main(["index", "build", "--out", str(idx), "--world", str(world), "--onnx", str(onnx_path)]) == 0
    capsys.readouterr()
    rep = _run_json(capsys, ["localize", "--index", str(idx), "--evaluate", str(world), "--json"])
    assert rep["backend"] == "onnxruntime"
    onnx_path.rename(tmp_path / "moved.onnx")
    assert main(["localize", "--index", str(idx), "--evaluate", str(world)]) == 2
    assert "built with --onnx" in capsys.readouterr().err


def test_add_folder_tiles_then_localize(world_index, tmp_path, capsys) -> None:
    _, idx_src = world_index
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(idx_src, idx)
    (tmp_path / "new").mkdir()
    tile_image(50, 64).save(tmp_path / "new" / "n1.png")
    (tmp_path / "new.csv").write_text("id,latitude,longitude,footprint_m\nn1,47.5,8.6,120\n")
    assert main(["index", "add", str(idx), "--random-init", "--tiles", str(tmp_path / "new"), "--csv",
                 str(tmp_path / "new.csv")]) == 0  # fmt: skip
    before = {key: GalleryIndex.load(idx_src).info()[key] for key in ("reference_features", "invariant_features")}
    info = _run_json(capsys, ["index", "info", str(idx), "--json"])
    assert info["count"] == 8  # tiles without imagery beyond themselves: no features of either kind
    assert {key: info[key] for key in before} == before
    out = _run_json(capsys, ["localize", str(tmp_path / "new" / "n1.png"), "--index", str(idx), "--json",
                             "--random-init"])  # fmt: skip
    assert out["results"][0]["matches"][0]["id"] == "n1"
    assert main(["index", "add", str(idx), "--random-init", "--tiles", str(tmp_path / "new"), "--csv",
                 str(tmp_path / "new.csv")]) == 2  # fmt: skip
    assert "already in the gallery" in capsys.readouterr().err


def test_checkpoint_identity_enforced(world_index, tmp_path, capsys) -> None:
    world, _ = world_index
    torch.manual_seed(1)
    ckpt_a = save_checkpoint(tmp_path / "a.pt", build_model("tiny"))
    torch.manual_seed(2)
    ckpt_b = save_checkpoint(tmp_path / "b.pt", build_model("tiny"))
    idx = tmp_path / "idx"
    assert main(["index", "build", "--out", str(idx), "--world", str(world), "--image-size", SIZE,
                 "--checkpoint", str(ckpt_a)]) == 0  # fmt: skip
    query = str(world / "University-1652/test/query_drone/0000/image-01.png")
    capsys.readouterr()
    assert main(["localize", query, "--index", str(idx)]) == 0  # the index remembers a.pt
    assert main(["localize", query, "--index", str(idx), "--checkpoint", str(ckpt_b)]) == 2
    assert "different model" in capsys.readouterr().err
    assert main(["localize", query, "--index", str(idx), "--checkpoint", str(ckpt_a)]) == 0


def test_localizer_python_api(world_index) -> None:
    world, idx = world_index
    index = GalleryIndex.load(idx)
    localizer = Localizer(TorchEncoder.load(None, "tiny", 32), index, k=2)
    assert localizer.fallback is None and any("not calibrated for this model" in n for n in localizer.notes)
    queries = load_queries(world / "cameras.csv")[:2]
    rep = evaluate_localizer(localizer, queries, ks=(1, 2), progress=False)
    assert rep["queries"] == 2 and rep["R@1"] == 1.0 and "Dis@2_m" in rep
    renamed = [dataclasses.replace(q, id=f"elsewhere-{q.id}") for q in queries]  # ids no tile carries, as when
    rep = evaluate_localizer(localizer, renamed, ks=(1, 2), progress=False)  # queries meet an orthophoto index
    assert "R@1" not in rep and "Dis@2_m" in rep  # no recall by ids that cannot match: distances only
    with pytest.raises(ValueError, match="different model"):
        Localizer(TorchEncoder.load(None, "tiny", 64), index)
    with pytest.raises(ValueError, match="temperature"):
        Localizer(TorchEncoder.load(None, "tiny", 32), index, temperature=0)


def test_a_registered_photo_without_a_pose_is_reported_where_it_looks() -> None:
    """No camera fix but a verified look-at point: the headline is that point, not the tile-level guess."""
    from spikevimformer.geo.localize import Localization, format_table

    tile = Match(rank=1, id="t1", score=0.9, latitude=48.18, longitude=16.30, footprint_m=100.0)
    r = Localization("p.jpg", [tile], 48.1839, 16.3130, 160.0, 0.01, 0.001, reason="no focal length",
                     look_at={"latitude": 48.1853385, "longitude": 16.3099782})
    head = format_table([r]).splitlines()[0]
    assert "looks at 48.1853385, 16.3099782" in head and "tile level" not in head
    plain = format_table([dataclasses.replace(r, look_at=None)]).splitlines()[0]
    assert "tile level: the camera within 160 m (95 %) of 48.183900, 16.313000" in plain


def _truth_csv(path, header: str, *rows: str):
    path.write_text("\n".join((header, *rows)) + "\n")
    return path


def test_truth_csv_heights_are_named_agl_or_amsl_and_image_centres_are_look_at_points(tmp_path) -> None:
    """An altitude column that does not say from where is refused (an AMSL one read as height above ground was
    off by the terrain); lat/lon/filename are read as UAV-VisLoc writes them; --truth look-at makes them the
    look-at point."""
    bare = _truth_csv(tmp_path / "bare.csv", "image,latitude,longitude,altitude_m", "a.jpg,47.0,8.0,2500")
    with pytest.raises(ValueError, match=r"bare.csv: column 'altitude_m' does not say .* height_agl_m .* "
                                         r"altitude_amsl_m"):  # fmt: skip
        load_queries(bare)
    named = _truth_csv(tmp_path / "named.csv", "filename,lat,lon,height_agl_m,altitude_amsl_m,heading_deg",
                       "a.jpg,47.0,8.0,120,2500,90", "b.jpg,47.001,8.0,,2510,")  # fmt: skip
    a, b = load_queries(named)
    assert (a.image, a.latitude, a.height_m, a.altitude_m, a.heading_deg) == (str(tmp_path / "a.jpg"), 47.0, 120.0,
                                                                              2500.0, 90.0)  # fmt: skip
    assert (b.height_m, b.altitude_m, b.look_at, b.truth) == (None, 2510.0, None, "camera")
    centre = load_queries(named, truth="look-at")[1]
    assert (centre.latitude, centre.look_at, centre.truth) == (47.001, (47.001, 8.0), "look-at")
    with pytest.raises(FileNotFoundError, match="truth 'location' needs"):
        load_queries(named, truth="location")
    (tmp_path / "B.JPG").write_bytes(b"")  # the CSV names b.jpg, the camera wrote B.JPG
    assert load_queries(named)[1].image == str(tmp_path / "B.JPG")


def test_look_at_truth_scores_where_the_photo_looks_not_the_camera() -> None:
    """An oblique fix: camera 80 m behind the image centre, look-at point 3 m off it. Scored as a camera position
    against image-centre truth it is a false fix; scored as a look-at point it is right."""
    frame = LocalFrame(47.0, 8.0)
    cam, look = [float(v) for v in frame.to_geo(0.0, -80.0)], [float(v) for v in frame.to_geo(3.0, 0.0)]
    tile = Match(rank=1, id="t1", score=0.9, latitude=47.0, longitude=8.0, footprint_m=100.0)
    r = Localization("p.jpg", [tile], cam[0], cam[1], 5.0, 0.01, 0.001, fix=True, reason="",
                     camera={"latitude": cam[0], "longitude": cam[1], "height_m": 100.0, "heading_deg": 0.0},
                     look_at={"latitude": look[0], "longitude": look[1]}, radius_m=6.0)  # fmt: skip
    as_camera = registration_metrics([Query("p.jpg", 47.0, 8.0)], [r], by_id=False)
    assert as_camera["false_fix_rate"] == 1.0 and as_camera["camera_median_error_m"] == pytest.approx(80, abs=0.5)
    assert "--truth look-at" in truth_hint(as_camera)  # the look-at points fit the truth: said so
    as_look = registration_metrics([Query("p.jpg", 47.0, 8.0, look_at=(47.0, 8.0), truth="look-at")], [r],
                                   by_id=False)  # fmt: skip
    assert as_look["false_fix_rate"] == 0.0 and as_look["look_at_median_error_m"] == pytest.approx(3, abs=0.1)
    assert "camera_median_error_m" not in as_look and "radius95_coverage" not in as_look


def test_sdm_names_its_scale_and_both_conventions_agree_with_their_formulas() -> None:
    """GTA-UAV: exp(-1e-3 d), d in metres; DenseUAV: exp(-5e3 d), d the (lon, lat) distance in degrees."""
    ret_lat, ret_lon = [[47.0 + 1e-4]], [[8.0 + 2e-4]]
    gta = distance_metrics([47.0], [8.0], ret_lat, ret_lon, ks=(1,))
    d_m = float(haversine_m(47.0, 8.0, 47.0 + 1e-4, 8.0 + 2e-4))
    assert gta["SDM@1"] == pytest.approx(np.exp(-1e-3 * d_m)) and gta["sdm"] == "s=1e-3/m, GTA-UAV"
    dense = distance_metrics([47.0], [8.0], ret_lat, ret_lon, ks=(1,), sdm="denseuav")
    assert dense["SDM@1"] == pytest.approx(np.exp(-5e3 * np.hypot(1e-4, 2e-4))) and dense["sdm"].endswith("DenseUAV")
    assert "SDM@1 (s=5e3/deg, DenseUAV)" in format_report(dense)
    with pytest.raises(ValueError, match="--sdm must be one of gta-uav, denseuav"):
        distance_metrics([47.0], [8.0], ret_lat, ret_lon, sdm="metres")


def test_heights_above_sea_level_need_a_dsm(world_index, tmp_path) -> None:
    world, idx = world_index
    localizer = Localizer(TorchEncoder.load(None, "tiny", 32), GalleryIndex.load(idx), k=2,
                          register=RegisterConfig())  # fmt: skip
    amsl = [Query(str(tmp_path / "absent.jpg"), 47.0, 8.0, altitude_m=2500.0)]  # never read: refused first
    with pytest.raises(ValueError, match="altitude above sea level .* no DSM .* --dsm, or give height_agl_m"):
        evaluate_localizer(localizer, amsl, progress=False)


def test_a_region_searches_only_the_tiles_reaching_into_it(world_index) -> None:
    world, idx = world_index
    index = GalleryIndex.load(idx)
    localizer = Localizer(TorchEncoder.load(None, "tiny", 32), index, k=3, register=None)
    photo = Image.open(load_queries(world / "cameras.csv")[0].image).convert("RGB")
    far = max(index.tiles, key=lambda t: haversine_m(t.latitude, t.longitude, index.tiles[0].latitude,
                                                     index.tiles[0].longitude))  # fmt: skip
    region = Region(far.latitude, far.longitude, 1.0)
    answer = localizer.localize([photo], regions=[region])[0]
    reach = {t.id for t in index.tiles
             if haversine_m(t.latitude, t.longitude, far.latitude, far.longitude) <= 1.0 + t.footprint_m / 2}
    assert {m.id for m in answer.matches} <= reach and far.id in {m.id for m in answer.matches}
    whole = localizer.localize([photo])[0]
    nowhere = localizer.localize([photo], regions=[Region(0.0, 0.0, 1.0)])[0]  # no tile there: the whole index
    assert [m.id for m in nowhere.matches] == [m.id for m in whole.matches]
