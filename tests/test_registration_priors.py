"""Orientation priors: DJI XMP packets, EXIF GPSImgDirection, flags, and the one-line errors for bad values."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from spikevimformer.cli import main
from spikevimformer.registration.priors import (
    GPS_IFD,
    GPS_IMG_DIRECTION,
    Prior,
    check_heading,
    check_pitch,
    merged,
    read_prior,
    recorded_prior,
    xmp_packet,
)

DJI_ATTRIBUTES = b"""<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="DJI Meta Data" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/"
  drone-dji:RelativeAltitude="+97.20" drone-dji:GimbalRollDegree="+0.00" drone-dji:GimbalYawDegree="-95.30"
  drone-dji:GimbalPitchDegree="-25.10" drone-dji:FlightYawDegree="-93.00"/>
</rdf:RDF></x:xmpmeta><?xpacket end='w'?>"""

DJI_ELEMENTS = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/">
<drone-dji:FlightYawDegree>12.5</drone-dji:FlightYawDegree><drone-dji:GimbalPitchDegree>-90.0</drone-dji:GimbalPitchDegree>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


def _jpeg_with_xmp(packet: bytes, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (90, 120, 80)).save(buf, "JPEG", xmp=packet, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def test_dji_attributes_give_heading_pitch_altitude() -> None:
    data = _jpeg_with_xmp(DJI_ATTRIBUTES)
    assert xmp_packet(data) is not None
    prior = read_prior(data, None, "dji.jpg")
    assert prior.heading_deg == pytest.approx(264.7)  # the gimbal's yaw, not the airframe's, wrapped to 0..360
    assert prior.pitch_deg == pytest.approx(25.1)  # DJI -25.1 (below the horizon) -> 25.1 degrees down
    assert prior.altitude_m == pytest.approx(97.2)
    assert "GimbalYawDegree" in prior.source


def test_dji_elements_and_the_airframe_yaw_when_no_gimbal_yaw() -> None:
    prior = read_prior(_jpeg_with_xmp(DJI_ELEMENTS), None, "p.jpg")
    assert prior.heading_deg == pytest.approx(12.5) and prior.pitch_deg == pytest.approx(90.0)
    assert prior.altitude_m is None and "FlightYawDegree" in prior.source


def test_exif_image_direction_when_no_xmp() -> None:
    exif = Image.Exif()
    exif.get_ifd(GPS_IFD)[GPS_IMG_DIRECTION] = 271.5
    buf = io.BytesIO()
    Image.new("RGB", (96, 96)).save(buf, "JPEG", exif=exif)
    data = buf.getvalue()
    prior = read_prior(data, Image.open(io.BytesIO(data)).getexif(), "e.jpg")
    assert prior.heading_deg == pytest.approx(271.5) and prior.source == "EXIF GPSImgDirection"
    assert read_prior(b"no metadata here", None, "x.jpg").empty


def test_malformed_xmp_names_the_file() -> None:
    broken = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF><unclosed></x:xmpmeta>"
    with pytest.raises(ValueError, match="bad.jpg: its XMP packet is malformed"):
        read_prior(broken, None, "bad.jpg")
    nonsense = DJI_ATTRIBUTES.replace(b'"-95.30"', b'"north"')
    with pytest.raises(ValueError, match=r"bad.jpg: XMP GimbalYawDegree is 'north'"):
        read_prior(nonsense, None, "bad.jpg")
    upward = DJI_ATTRIBUTES.replace(b'"-25.10"', b'"+30.00"')
    with pytest.raises(ValueError, match="above the horizon"):
        read_prior(upward, None, "bad.jpg")


@pytest.mark.parametrize("value", [-360.5, 400.0, float("nan")])
def test_heading_beyond_a_turn_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="is no heading"):
        check_heading(value)


def test_headings_wrap_as_dji_writes_them() -> None:
    assert check_heading(-10.0) == 350.0 and check_heading(360.0) == 0.0
    assert read_prior(DJI_ATTRIBUTES.replace(b'"-95.30"', b'"-308.6"'), None, "p.jpg").heading_deg == 51.4


def test_a_malformed_record_costs_only_itself() -> None:
    broken = _jpeg_with_xmp(b"<x:xmpmeta><broken")
    prior = recorded_prior(broken, None, "bad.jpg")
    assert prior.heading_deg is None and prior.problem.startswith("bad.jpg: its XMP packet is malformed")
    given = merged(prior, heading=30.0)
    assert given.heading_deg == 30.0 and given.problem  # the flag sets what the file could not


@pytest.mark.parametrize("value", [-0.1, 91.0])
def test_pitch_outside_0_90_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="is no pitch"):
        check_pitch(value)


def test_flags_override_what_the_photo_records() -> None:
    recorded = read_prior(_jpeg_with_xmp(DJI_ATTRIBUTES), None, "dji.jpg")
    given = merged(recorded, heading=10.0)
    assert given.heading_deg == 10.0 and given.pitch_deg == pytest.approx(25.1) and "given heading" in given.source
    assert merged(Prior(), heading=360.0).heading_deg == 0.0


@pytest.mark.parametrize("flag, value, words", [("--heading", "400", "--heading 400 is no heading"),
                                                ("--pitch", "95", "is no pitch"),
                                                ("--altitude", "-5", "is no altitude")])  # fmt: skip
def test_cli_refuses_bad_priors_in_one_line(tmp_path, capsys, flag: str, value: str, words: str) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(_jpeg_with_xmp(DJI_ATTRIBUTES))
    assert main(["localize", str(photo), "--index", str(tmp_path / "no-index"), flag, value, "--random-init"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
