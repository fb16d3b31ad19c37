from __future__ import annotations

import math

import numpy as np
import pytest

from spikevimformer.geo.metrics import distance_metrics
from spikevimformer.geodesy import (
    EARTH_RADIUS_M,
    LocalFrame,
    haversine_m,
    parse_crs,
    utm_to_geo,
    web_mercator_to_geo,
)


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(math.radians(1) * EARTH_RADIUS_M, rel=1e-9)
    assert haversine_m(47, 8, 47, 8) == 0
    # a degree of longitude shrinks with cos(latitude)
    assert haversine_m(60, 0, 60, 1) == pytest.approx(0.5 * haversine_m(0, 0, 0, 1), rel=1e-3)


def test_local_frame_round_trip_and_scale() -> None:
    frame = LocalFrame(47.37, 8.54)
    east, north = frame.to_local([47.37, 47.371], [8.54, 8.541])
    lat, lon = frame.to_geo(east, north)
    np.testing.assert_allclose(lat, [47.37, 47.371], atol=1e-12)
    np.testing.assert_allclose(lon, [8.54, 8.541], atol=1e-12)
    assert math.hypot(east[1], north[1]) == pytest.approx(float(haversine_m(47.37, 8.54, 47.371, 8.541)), rel=1e-4)


def test_projections_against_known_values() -> None:
    lat, lon = web_mercator_to_geo(0.0, 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(45) / 2)))
    assert float(lat) == pytest.approx(45.0, abs=1e-9) and float(lon) == 0
    # on the central meridian, UTM northing is 0.9996 x the WGS84 meridian arc (4,984,944.378 m at 45 deg)
    lat, lon = utm_to_geo(500_000.0, 0.9996 * 4_984_944.378, zone=32)
    assert float(lat) == pytest.approx(45.0, abs=1e-6) and float(lon) == pytest.approx(9.0, abs=1e-9)
    # southern hemisphere: false northing 10,000 km, mirror image of the north
    slat, _ = utm_to_geo(500_000.0, 10_000_000 - 0.9996 * 4_984_944.378, zone=32, north=False)
    assert float(slat) == pytest.approx(-45.0, abs=1e-6)
    # 2 km of easting near the meridian is about 2 km / 0.9996 on the ground
    la, lo = utm_to_geo([499_000.0, 501_000.0], [5_000_000.0] * 2, zone=32)
    assert float(haversine_m(la[0], lo[0], la[1], lo[1])) == pytest.approx(2000 / 0.9996, rel=5e-3)
    assert parse_crs("EPSG:32632")(500_000.0, 0.0)[1] == pytest.approx(9.0)
    assert parse_crs("utm:33s")(500_000.0, 10_000_000.0)[0] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="unsupported coordinate system"):
        parse_crs("CH1903+")


def test_distance_metrics_by_hand() -> None:
    frame = LocalFrame(47.0, 8.0)
    # query 0: top-1 at 30 m, second at 0 m; query 1: top-1 at 0 m, second at 200 m
    lat, lon = frame.to_geo(np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[30.0, 0.0], [0.0, 200.0]]))
    m = distance_metrics([47.0, 47.0], [8.0, 8.0], lat, lon, ks=(1, 2), thresholds_m=(25, 50))
    assert m["Dis@1_m"] == pytest.approx(15.0, rel=1e-3)
    assert m["Dis@2_m"] == pytest.approx(0.0, abs=1e-6)
    assert m["within_25m"] == 0.5 and m["within_50m"] == 1.0
    s = 1e-3
    sdm0 = (1.0 * math.exp(-s * 30) + 0.5 * 1.0) / 1.5
    sdm1 = (1.0 * 1.0 + 0.5 * math.exp(-s * 200)) / 1.5
    assert m["SDM@2"] == pytest.approx((sdm0 + sdm1) / 2, rel=1e-3)
    assert m["SDM@1"] == pytest.approx((math.exp(-s * 30) + 1) / 2, rel=1e-3)
    with pytest.raises(ValueError):
        distance_metrics([47.0], [8.0], lat, lon)


def test_proj_agrees_with_our_utm_and_web_mercator_formulas() -> None:
    """PROJ (through rasterio) is the fallback for other EPSG codes; where we have formulas, both agree."""
    from rasterio.crs import CRS

    from spikevimformer.geodesy import _proj_to_geo

    x, y = np.array([450_000.0, 512_345.6]), np.array([5_200_000.0, 6_999_000.0])
    for code in (32632, 32733):
        ours = parse_crs(f"EPSG:{code}")(x, y)
        np.testing.assert_allclose(_proj_to_geo(CRS.from_epsg(code), x, y), ours, atol=1e-8)
    merc = np.array([890_555.9, -1_234_567.0]), np.array([5_942_074.0, 2_000_000.0])
    np.testing.assert_allclose(_proj_to_geo(CRS.from_epsg(3857), *merc), parse_crs("EPSG:3857")(*merc), atol=1e-8)


def test_other_crs_codes_go_through_proj_or_name_the_problem() -> None:
    lat, lon = parse_crs("EPSG:31256")(-1_500.0, 338_550.0)  # Austria GK East (MGI): Vienna, Schönbrunn
    assert 48.18 < float(lat) < 48.19 and 16.31 < float(lon) < 16.32
    with pytest.raises(ValueError, match="unknown coordinate system 'EPSG:999999'"):
        parse_crs("EPSG:999999")
    with pytest.raises(ValueError, match="neither geographic nor projected"):
        parse_crs("EPSG:4000")  # MOLDREF99 geocentric
    with pytest.raises(ValueError, match="use an EPSG code"):
        parse_crs("Lambert-93")


def test_coordinates_a_crs_cannot_hold_are_refused_not_wrapped() -> None:
    """A world file read in the wrong CRS must not land elsewhere on Earth: PROJ's round trip and UTM's range."""
    with pytest.raises(ValueError, match="outside what EPSG:31256 can place on Earth"):
        parse_crs("EPSG:31256")(-1_750.0, 1e9)
    with pytest.raises(ValueError, match="outside any UTM zone"):
        parse_crs("UTM:33N")(-1_750.0, 338_800.0)  # Vienna's national-grid numbers read as UTM
    lat, _ = parse_crs("UTM:33N")(np.array([450_000.0, 550_000.0]), np.array([5_300_000.0, 5_300_000.0]))
    assert np.all((47.8 < lat) & (lat < 47.9))
