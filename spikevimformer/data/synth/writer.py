"""Dataset layouts (where each rendered image goes) and the staging folder that makes a world appear whole."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ...fileio import follow_umask
from ...geodesy import WorldFile

ROOT = {"university1652": "University-1652", "sues200": "SUES-200"}
ORTHO_IMAGE, ORTHO_WORLD_FILE = "ortho.jpg", "ortho.jgw"
ORTHO_JPEG_QUALITY = 92
DSM_FILE, CAMERA_FILE = "dsm.tif", "cameras.json"  # terrain heights (worlds with relief); the drone lens (OpenSfM)
# world.json last: it marks a complete world; a file a world does not write is removed from an older one it replaces
OUTPUT_FILES = ("locations.csv", "cameras.csv", ORTHO_IMAGE, ORTHO_WORLD_FILE, DSM_FILE, CAMERA_FILE, "world.json")
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
SENSOR_WIDTH_MM = 36.0  # virtual sensor behind the EXIF focal length (full-frame width)
FULL_FRAME_DIAGONAL_MM = 43.2666
_EXIF_IFD = 0x8769


@dataclass(frozen=True)
class Placement:
    """Every relative path one location's images are written to."""

    satellite: tuple[tuple[str, str | None], ...]  # (path, altitude group or None: every group)
    drone: tuple[tuple[str, str | None], ...]  # (folder, group): view k of the group goes to folder/name(k)


def drone_name(layout: str, k: int, n: int) -> str:
    if layout == "university1652":
        return f"image-{k + 1:0{max(2, len(str(n)))}d}.jpeg"
    return f"{k}.jpg"


def placement(layout: str, loc_id: str, split: str, groups: list[str | None]) -> Placement:
    """University-1652: train/, test/query_* and test/gallery_* (distractors in the galleries only);
    SUES-200: Training/<alt>/ and Testing/<alt>/ per altitude, every id in the galleries."""
    root = ROOT[layout]
    if layout == "university1652":
        sat = {"train": ["train/satellite"], "test": ["test/gallery_satellite", "test/query_satellite"],
               "distractor": ["test/gallery_satellite"]}[split]
        drone = {"train": ["train/drone"], "test": ["test/query_drone", "test/gallery_drone"],
                 "distractor": ["test/gallery_drone"]}[split]
        return Placement(tuple((f"{root}/{d}/{loc_id}/{loc_id}.jpg", None) for d in sat),
                         tuple((f"{root}/{d}/{loc_id}", None) for d in drone))
    sats, drones = [], []
    for alt in groups:
        if split == "train":
            sats += [(f"{root}/Training/{alt}/satellite/{loc_id}/0.png", alt)]
            drones += [(f"{root}/Training/{alt}/drone/{loc_id}", alt)]
        else:
            sats += [(f"{root}/Testing/{alt}/query_satellite/{loc_id}/0.png", alt)]
            drones += [(f"{root}/Testing/{alt}/query_drone/{loc_id}", alt)]
        sats += [(f"{root}/Testing/{alt}/gallery_satellite/{loc_id}/0.png", alt)]
        drones += [(f"{root}/Testing/{alt}/gallery_drone/{loc_id}", alt)]
    return Placement(tuple(sats), tuple(drones))


def encode(rgb: np.ndarray, path: str, jpeg_quality: int) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if path.endswith(".png"):
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:  # pragma: no cover - OpenCV without codecs
        raise ValueError(f"OpenCV could not encode {path}")
    return buf.tobytes()


def camera_exif(focal_px: float, width: int, height: int, distorted: bool = False) -> bytes:
    """EXIF payload giving the lens's focal length the way drone photos carry their intrinsics (the Model names a
    distorting lens, whose coefficients the DJI XMP carries)."""
    exif = Image.Exif()
    exif[0x010F] = "spikevimformer"  # Make
    exif[0x0110] = "synthetic Brown-Conrady lens" if distorted else "synthetic pinhole"  # Model
    sub = exif.get_ifd(_EXIF_IFD)
    sub[0x920A] = float(focal_px) * SENSOR_WIDTH_MM / width  # FocalLength, mm
    sub[0xA20E] = sub[0xA20F] = width / (SENSOR_WIDTH_MM / 10)  # FocalPlaneX/YResolution, px per cm
    sub[0xA210] = 3  # FocalPlaneResolutionUnit: cm
    sub[0xA405] = int(round(float(focal_px) * FULL_FRAME_DIAGONAL_MM / math.hypot(width, height)))  # 35 mm equiv.
    sub[0xA002], sub[0xA003] = int(width), int(height)  # ExifImageWidth / ExifImageHeight
    return exif.tobytes()


def with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """Splice an EXIF APP1 segment right after SOI, leaving the coded image (and so its pixels) untouched."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    payload = exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif
    if len(payload) + 2 > 0xFFFF:
        raise ValueError(f"EXIF payload of {len(payload)} bytes does not fit one APP1 segment")
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def dji_xmp(focal_px: float, dist: tuple[float, ...], yaw_deg: float, pitch_deg: float) -> bytes:
    """A DJI-style XMP packet: the gimbal's attitude (GimbalYaw/Pitch/RollDegree; DJI's pitch is -90 straight
    down) and, for a lens with distortion, DewarpData (fx, fy, cx, cy offsets from the centre, k1, k2, p1, p2, k3)
    with DewarpFlag 0 (the pixels are not undistorted), as DJI enterprise drones write them."""
    yaw = (yaw_deg + 180.0) % 360.0 - 180.0
    attrs = (f'drone-dji:GimbalYawDegree="{yaw:+.2f}" drone-dji:GimbalPitchDegree="{-pitch_deg:+.2f}" '
             'drone-dji:GimbalRollDegree="+0.00"')  # fmt: skip
    if dist:
        values = ",".join(f"{v:.6f}" for v in (focal_px, focal_px, 0.0, 0.0, *dist))
        attrs += f' drone-dji:DewarpFlag="0" drone-dji:DewarpData="2026-01-01;{values}"'
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" {attrs}/></rdf:RDF>'
            "</x:xmpmeta>").encode()  # fmt: skip


def with_xmp(jpeg: bytes, packet: bytes) -> bytes:
    """Splice an XMP APP1 segment right after SOI (and any EXIF segment): pixels untouched."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    at = 2
    if jpeg[2:4] == b"\xff\xe1":  # keep EXIF first, where readers look for it
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    payload = XMP_HEADER + packet
    return jpeg[:at] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[at:]


def write_camera_file(path: Path, cfg) -> None:
    """cameras.json as OpenSfM/OpenDroneMap write it: the drone lens (brown; normalised by the longer side)."""
    size = cfg.image_size
    focal = (size / 2) / math.tan(math.radians(cfg.fov_deg) / 2) / size
    k1, k2, p1, p2, k3 = list(cfg.dist) or [0.0] * 5
    entry = {"projection_type": "brown", "width": size, "height": size, "focal_x": focal, "focal_y": focal,
             "c_x": 0.0, "c_y": 0.0, "k1": k1, "k2": k2, "p1": p1, "p2": p2, "k3": k3}  # fmt: skip
    path.write_text(json.dumps({f"v2 spikevimformer synthetic {size} {size} brown": entry}, indent=2) + "\n")


def write_dsm(path: Path, heights: np.ndarray, cell_px: int, geo) -> dict:
    """The surface heights (terrain and roofs) as a float32 GeoTIFF in EPSG:4326 on a grid `cell_px` world pixels
    coarse, aligned with ortho.jpg's; returns world.json's record of it."""
    import rasterio
    from rasterio.transform import Affine

    wf = geo.world_file()
    # world file: centre of pixel (0, 0); GeoTIFF: its corner
    transform = Affine(wf.a * cell_px, 0.0, wf.c - wf.a / 2, 0.0, wf.e * cell_px, wf.f - wf.e / 2)
    rows, cols = heights.shape
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="float32",
                       crs="EPSG:4326", transform=transform, nodata=float("nan"), compress="deflate") as dst:
        dst.write(heights.astype(np.float32), 1)  # fmt: skip
    return {"image": path.name, "crs": "EPSG:4326", "ground_resolution_m": geo.gsd_m * cell_px, "units": "metre",
            "surface": "terrain and roofs", "relief_m": float(heights.max() - heights.min())}  # fmt: skip


def world_file_text(wf: WorldFile) -> str:
    """Six lines A, D, B, E, C, F at full double precision, so readers recover the exact transform."""
    return "".join(f"{float(v)!r}\n" for v in (wf.a, wf.d, wf.b, wf.e, wf.c, wf.f))


def write_bytes(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Staging:
    """Build a world in a hidden folder next to its destination, then move it into place.

    When the output folder does not exist yet, the whole folder appears with one rename. Otherwise its
    entries (dataset folder, CSVs, orthophoto, world.json last) are swapped in one by one; a crash leaves only a
    hidden `.synth-*` folder, never a dataset folder without its world.json.
    """

    def __init__(self, out: Path, layout: str, overwrite: bool):
        self.out = Path(out)
        self.names = (ROOT[layout], *OUTPUT_FILES)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out} exists and is not a folder")
        clash = [n for n in self.names if (self.out / n).exists()]
        if clash and not overwrite:
            raise ValueError(f"{self.out} already holds {', '.join(clash)}; pass --overwrite to replace it")
        self.fresh = not self.out.exists()
        parent = self.out.parent if self.fresh else self.out
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".synth-{self.out.name}-", dir=parent))
        follow_umask(self.path, folder=True)  # it becomes the world folder itself

    def publish(self) -> None:
        if self.fresh and not self.out.exists():
            os.replace(self.path, self.out)
            return
        for name in self.names:
            dst = self.out / name
            if not (self.path / name).exists():
                if dst.is_file():
                    dst.unlink()
                continue
            if dst.is_dir():
                trash = Path(tempfile.mkdtemp(prefix=".synth-old-", dir=self.out))
                os.replace(dst, trash / name)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(self.path / name, dst)
        shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
