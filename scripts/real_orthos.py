"""Leave-one-out orthophotos, truth and lens from a small OpenDroneMap project, to test localisation on real photos.

Input (`--odm DIR`, laid out like orthority's tests/data/odm, or a folder holding such an `odm/`):

    DIR/images/*.tif (or .jpg, .png)    the photos, named as the shots of the reconstruction
    DIR/opensfm/reconstruction.json      OpenSfM's reconstruction as ODM writes it: cameras, shots, reference_lla
    DIR/odm_dem/dsm.tif                  the surface model, in a projected CRS (metres)

ODM's reconstruction.json is georeferenced: its world frame is the DSM's projected CRS (e.g. UTM) shifted by
`reference_lla` projected into that CRS, with z the height in the DSM's vertical reference. A shot's `rotation` is
the axis-angle of the world -> camera rotation R (OpenCV axes: x right, y down, z forward) and its `translation` t,
so the camera centre is -R^T t. Brown cameras are normalised by the image's longer side, the principal point an
offset from the image centre (OpenSfM's convention, the same polynomial as OpenCV's k1, k2, p1, p2, k3).

Output (`--out DIR`):

    ortho_without_<stem>.tif   for each photo, an RGBA orthophoto (alpha 0 = nodata) on a north-up grid of `--gsd`
                               metres in the DSM's CRS, made from the OTHER photos only: every output pixel's ground
                               point (E, N, DSM height, bilinear) is projected into each other photo and coloured
                               from the one that sees it closest to nadir. Occlusion is ignored (a point hidden
                               behind a roof or tree still takes the colour of whatever the ray hits first).
    truth.csv                  image (absolute path), latitude, longitude, altitude_m (camera height in the DSM's
                               vertical reference), heading_deg (azimuth of the optical axis from true north),
                               pitch_deg (its depression below the horizon), height_above_ground_m (camera height
                               minus the DSM height below it)
    cameras.json               the reconstruction's cameras in OpenSfM's format, for `--camera`
    dsm.tif                    a copy of the DSM

    python scripts/real_orthos.py --odm /path/to/orthority/tests/data/odm --out /tmp/loo
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as warp_points

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
CHUNK_ROWS = 256  # output rows projected at a time
ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class Shot:
    """One photo with its pose (in the DSM's CRS) and its lens in pixels of the photo on disk."""

    name: str  # the photo's stem
    key: str  # the shot's name in reconstruction.json
    path: Path
    rotation: np.ndarray  # 3x3, world -> camera
    centre: np.ndarray  # camera centre (E, N, z) in the DSM's CRS
    matrix: np.ndarray  # 3x3 camera matrix
    dist: np.ndarray  # k1, k2, p1, p2, k3
    width: int
    height: int
    r_max: float  # undistorted radius (normalised) beyond which the lens polynomial folds back


@dataclass(frozen=True)
class Dsm:
    """The surface model: heights (NaN = nodata), its grid and CRS."""

    heights: np.ndarray
    transform: Affine
    crs: CRS
    path: Path


@dataclass(frozen=True)
class Grid:
    """A north-up output grid: upper-left corner, pixel size, shape."""

    west: float
    north: float
    gsd: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        """The grid's affine transform."""
        return Affine(self.gsd, 0.0, self.west, 0.0, -self.gsd, self.north)


def find_layout(folder: Path) -> tuple[list[Path], Path, Path]:
    """The photos, reconstruction.json and dsm.tif of an ODM folder (or of its `odm/` subfolder)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--odm {folder} is not a folder")
    if not (folder / "opensfm").is_dir() and (folder / "odm" / "opensfm").is_dir():
        folder = folder / "odm"
    recon, dsm, images = folder / "opensfm" / "reconstruction.json", folder / "odm_dem" / "dsm.tif", folder / "images"
    for path in (recon, dsm):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (expected images/, opensfm/reconstruction.json and "
                                    "odm_dem/dsm.tif under --odm)")  # fmt: skip
    if not images.is_dir():
        raise FileNotFoundError(f"{images} does not exist (the photos go in images/ under --odm)")
    photos = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise FileNotFoundError(f"{images} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return photos, recon, dsm


def read_reconstruction(path: Path) -> dict:
    """The first reconstruction of an OpenSfM reconstruction.json, checked for cameras, shots and reference_lla."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not JSON ({exc})") from None
    recon = data[0] if isinstance(data, list) and data else data
    if not isinstance(recon, dict) or not all(k in recon for k in ("cameras", "shots", "reference_lla")):
        raise ValueError(f"{path}: expected an OpenSfM reconstruction with cameras, shots and reference_lla")
    return recon


def read_dsm(path: Path) -> Dsm:
    """The DSM's first band as float64 with nodata turned into NaN; it must be north-up in a projected CRS."""
    with rasterio.open(path) as src:
        heights = src.read(1).astype(np.float64)
        if src.nodata is not None and not np.isnan(src.nodata):
            heights[heights == src.nodata] = np.nan
        if src.crs is None or not src.crs.is_projected:
            raise ValueError(f"{path}: the DSM needs a projected CRS in metres, got {src.crs}")
        if src.transform.b != 0 or src.transform.d != 0 or src.transform.e >= 0:
            raise ValueError(f"{path}: the DSM must be north-up (no rotation), got {src.transform}")
        return Dsm(heights, src.transform, src.crs, path)


def world_offset(recon: dict, crs: CRS) -> np.ndarray:
    """reference_lla projected into the DSM's CRS: reconstruction (x, y, z) + offset = (E, N, z)."""
    ref = recon["reference_lla"]
    xs, ys = warp_points(CRS.from_epsg(4326), crs, [ref["longitude"]], [ref["latitude"]])
    return np.array([xs[0], ys[0], 0.0])


def fold_radius(dist: np.ndarray) -> float:
    """The smallest undistorted radius at which the radial polynomial stops growing (points beyond fold back)."""
    k1, k2, _, _, k3 = dist
    r = np.linspace(0.0, 4.0, 4001)
    slope = 1 + 3 * k1 * r**2 + 5 * k2 * r**4 + 7 * k3 * r**6
    bad = np.nonzero(slope <= 0)[0]
    return float(r[bad[0]]) if bad.size else 4.0


def lens(camera: dict, width: int, height: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A brown/perspective OpenSfM camera as an OpenCV matrix and distortion for a `width` x `height` photo."""
    kind = camera.get("projection_type")
    if kind not in ("brown", "perspective"):
        raise ValueError(f"{where}: projection type {kind!r} is not supported (brown or perspective)")
    aspect = camera["width"] / camera["height"]
    if abs(width / height - aspect) > ASPECT_TOLERANCE * aspect:
        raise ValueError(f"{where}: the photo is {width}x{height} but its camera is {camera['width']}x"
                         f"{camera['height']}")  # fmt: skip
    side = max(width, height)
    fx = camera.get("focal_x", camera.get("focal"))
    fy = camera.get("focal_y", camera.get("focal"))
    cx = (width - 1) / 2 + camera.get("c_x", 0.0) * side
    cy = (height - 1) / 2 + camera.get("c_y", 0.0) * side
    matrix = np.array([[fx * side, 0, cx], [0, fy * side, cy], [0, 0, 1]], dtype=np.float64)
    dist = np.array([camera.get(k, 0.0) for k in ("k1", "k2", "p1", "p2", "k3")], dtype=np.float64)
    return matrix, dist


def photo_size(path: Path) -> tuple[int, int]:
    """Width and height of a photo."""
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the photo ({exc})") from None


def read_shots(recon: dict, photos: list[Path], offset: np.ndarray) -> list[Shot]:
    """The shots of the reconstruction that have a photo, with poses in the DSM's CRS."""
    shots = []
    by_stem = {p.stem: p for p in photos}
    for name, shot in sorted(recon["shots"].items()):
        path = by_stem.get(Path(name).stem)
        if path is None:
            print(f"note: shot {name} has no photo in images/; skipped", file=sys.stderr)
            continue
        rotation = cv2.Rodrigues(np.asarray(shot["rotation"], dtype=np.float64))[0]
        centre = -rotation.T @ np.asarray(shot["translation"], dtype=np.float64) + offset
        width, height = photo_size(path)
        camera = recon["cameras"][shot["camera"]]
        matrix, dist = lens(camera, width, height, str(path))
        radius = fold_radius(dist)
        shots.append(Shot(Path(name).stem, name, path, rotation, centre, matrix, dist, width, height, radius))
    if not shots:
        raise ValueError("no shot of the reconstruction has a photo in images/")
    return shots


def dsm_heights(dsm: Dsm, east: np.ndarray, north: np.ndarray) -> np.ndarray:
    """Bilinear DSM heights at (east, north); NaN where any of the four neighbours is nodata or off the DSM."""
    inv = ~dsm.transform
    col, row = inv * (east, north)
    mapx, mapy = (col - 0.5).astype(np.float32), (row - 0.5).astype(np.float32)
    valid = np.isfinite(dsm.heights).astype(np.float32)
    filled = np.nan_to_num(dsm.heights, nan=0.0).astype(np.float32)
    z = cv2.remap(filled, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ok = cv2.remap(valid, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.where(ok > 0.999, z, np.nan).astype(np.float64)


def project(shot: Shot, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) of world points (N x 3, DSM CRS) in a shot, whether it sees them, their off-nadir
    angle in degrees."""
    rel = points - shot.centre
    cam = rel @ shot.rotation.T
    tvec = -shot.rotation @ shot.centre
    rvec = cv2.Rodrigues(shot.rotation)[0]
    uv = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, tvec, shot.matrix, shot.dist)[0].reshape(-1, 2)
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.hypot(cam[:, 0], cam[:, 1]) / z
    u, v = uv[:, 0], uv[:, 1]
    seen = (z > 0) & (radius < shot.r_max) & (u >= 0) & (u <= shot.width - 1) & (v >= 0) & (v <= shot.height - 1)
    off_nadir = np.degrees(np.arccos(np.clip(-rel[:, 2] / np.linalg.norm(rel, axis=1), -1, 1)))
    return uv, seen, off_nadir


def read_rgb(path: Path) -> np.ndarray:
    """A photo as RGB uint8."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the photo ({exc})") from None


def ground_points(grid: Grid, dsm: Dsm, row0: int, row1: int) -> np.ndarray:
    """(rows x width x 3) ground points at the centres of grid rows row0..row1-1 (z NaN where the DSM has none)."""
    cols = np.arange(grid.width)
    rows = np.arange(row0, row1)
    east = np.broadcast_to(grid.west + (cols + 0.5) * grid.gsd, (rows.size, grid.width))
    north = np.broadcast_to((grid.north - (rows + 0.5) * grid.gsd)[:, None], (rows.size, grid.width))
    return np.stack([east, north, dsm_heights(dsm, east, north)], axis=-1)


def orthorectify(shots: list[Shot], dsm: Dsm, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """RGB (height x width x 3) and mask of the shots on the grid, each pixel from the shot seeing it nearest
    nadir; occlusion is ignored."""
    rgb = np.zeros((grid.height, grid.width, 3), np.uint8)
    mask = np.zeros((grid.height, grid.width), bool)
    images = [read_rgb(s.path) for s in shots]
    for row0 in range(0, grid.height, CHUNK_ROWS):
        row1 = min(row0 + CHUNK_ROWS, grid.height)
        points = ground_points(grid, dsm, row0, row1)
        shape = points.shape[:2]
        flat = points.reshape(-1, 3)
        ground = np.isfinite(flat[:, 2])
        best = np.full(flat.shape[0], np.inf)
        out = np.zeros((flat.shape[0], 3), np.uint8)
        for shot, image in zip(shots, images, strict=True):
            uv, seen, angle = project(shot, np.where(ground[:, None], flat, 0.0))
            take = ground & seen & (angle < best)
            if not take.any():
                continue
            maps = np.clip(uv, -1, max(shot.width, shot.height)).reshape(shape + (2,)).astype(np.float32)
            colour = cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            out[take] = colour.reshape(-1, 3)[take]
            best[take] = angle[take]
        rgb[row0:row1] = out.reshape(shape + (3,))
        mask[row0:row1] = np.isfinite(best).reshape(shape)
    return rgb, mask


def dsm_centres(dsm: Dsm) -> np.ndarray:
    """(rows x cols x 3) ground points at the DSM's own pixel centres."""
    rows, cols = np.mgrid[0 : dsm.heights.shape[0], 0 : dsm.heights.shape[1]]
    east, north = dsm.transform * (cols + 0.5, rows + 0.5)
    return np.stack([east, north, dsm.heights], axis=-1)


def footprint(shots: list[Shot], dsm: Dsm) -> np.ndarray:
    """Boolean DSM-grid mask of the valid DSM pixels that any of the shots sees."""
    points = dsm_centres(dsm).reshape(-1, 3)
    ground = np.isfinite(points[:, 2])
    seen = np.zeros(points.shape[0], bool)
    for shot in shots:
        seen |= project(shot, np.where(ground[:, None], points, 0.0))[1]
    return (seen & ground).reshape(dsm.heights.shape)


def grid_over(mask: np.ndarray, dsm: Dsm, gsd: float) -> Grid:
    """A grid of `gsd` metres (snapped to multiples of it) over the DSM pixels in `mask`, one DSM pixel wider."""
    if not mask.any():
        raise ValueError("the photos see no valid DSM pixel (wrong poses, CRS or reference_lla?)")
    rows, cols = np.nonzero(mask)
    r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, mask.shape[0])
    c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, mask.shape[1])
    west, north = dsm.transform * (c0, r0)
    east, south = dsm.transform * (c1, r1)
    west, south = math.floor(west / gsd) * gsd, math.floor(south / gsd) * gsd
    east, north = math.ceil(east / gsd) * gsd, math.ceil(north / gsd) * gsd
    return Grid(west, north, gsd, round((east - west) / gsd), round((north - south) / gsd))


def write_ortho(path: Path, rgb: np.ndarray, mask: np.ndarray, grid: Grid, crs: CRS) -> None:
    """An RGBA GeoTIFF (alpha 255 where seen, 0 elsewhere; RGB 0 there too)."""
    rgb = np.where(mask[..., None], rgb, 0).astype(np.uint8)
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=4, dtype="uint8", crs=crs,
                   transform=grid.transform, photometric="RGB", alpha="YES", compress="deflate", tiled=True,
                   blockxsize=512, blockysize=512)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb.transpose(2, 0, 1), indexes=[1, 2, 3])
        dst.write(mask.astype(np.uint8) * 255, 4)


def true_heading(shot: Shot, crs: CRS) -> float:
    """Azimuth of the optical axis from true north, in degrees (grid north corrected by meridian convergence)."""
    axis = shot.rotation[2]
    step = 10.0 * axis[:2] / np.linalg.norm(axis[:2])
    east = [shot.centre[0], shot.centre[0] + step[0]]
    north = [shot.centre[1], shot.centre[1] + step[1]]
    lon, lat = warp_points(crs, CRS.from_epsg(4326), east, north)
    d_east = math.radians(lon[1] - lon[0]) * math.cos(math.radians(lat[0]))
    d_north = math.radians(lat[1] - lat[0])
    return math.degrees(math.atan2(d_east, d_north)) % 360.0


def pitch(shot: Shot) -> float:
    """Depression of the optical axis below the horizon, in degrees (90 = straight down)."""
    axis = shot.rotation[2]
    return math.degrees(math.asin(-axis[2] / np.linalg.norm(axis)))


def ground_below(shot: Shot, dsm: Dsm) -> float:
    """The DSM height below the camera (bilinear; the nearest valid DSM pixel within 5 m if nodata), NaN if none."""
    z = dsm_heights(dsm, np.array([[shot.centre[0]]]), np.array([[shot.centre[1]]]))[0, 0]
    if np.isfinite(z):
        return float(z)
    points = dsm_centres(dsm)
    dist = np.hypot(points[..., 0] - shot.centre[0], points[..., 1] - shot.centre[1])
    dist[~np.isfinite(dsm.heights)] = np.inf
    near = np.unravel_index(np.argmin(dist), dist.shape)
    return float(dsm.heights[near]) if dist[near] <= 5.0 else float("nan")


def write_truth(path: Path, shots: list[Shot], dsm: Dsm) -> None:
    """truth.csv: the photos' true positions and orientation."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "latitude", "longitude", "altitude_m", "heading_deg", "pitch_deg",
                      "height_above_ground_m"])  # fmt: skip
        for shot in shots:
            lon, lat = warp_points(dsm.crs, CRS.from_epsg(4326), [shot.centre[0]], [shot.centre[1]])
            above = shot.centre[2] - ground_below(shot, dsm)
            out.writerow([str(shot.path.resolve()), f"{lat[0]:.9f}", f"{lon[0]:.9f}", f"{shot.centre[2]:.3f}",
                          f"{true_heading(shot, dsm.crs):.3f}", f"{pitch(shot):.3f}",
                          "" if math.isnan(above) else f"{above:.3f}"])  # fmt: skip


def write_cameras(path: Path, recon: dict, shots: list[Shot]) -> None:
    """cameras.json in OpenSfM's format: the reconstruction's cameras that the shots use."""
    used = {recon["shots"][s.key]["camera"] for s in shots}
    path.write_text(json.dumps({k: v for k, v in recon["cameras"].items() if k in used}, indent=2) + "\n")


def report_sizes(shots: list[Shot], recon: dict) -> None:
    """Say whether the photos on disk have the size their camera in the reconstruction gives."""
    for shot in shots:
        camera = recon["cameras"][recon["shots"][shot.key]["camera"]]
        same = (shot.width, shot.height) == (camera["width"], camera["height"])
        print(f"{shot.name}: photo {shot.width}x{shot.height}, camera {camera['width']}x{camera['height']}"
              f"{'' if same else ' (lens scaled to the photo)'}; centre E {shot.centre[0]:.2f} N {shot.centre[1]:.2f}"
              f" z {shot.centre[2]:.2f}")  # fmt: skip


def check_centres(shots: list[Shot], dsm: Dsm) -> None:
    """Warn when a camera centre is far from the DSM (a sign of a topocentric, not georeferenced, reconstruction)."""
    h, w = dsm.heights.shape
    west, north = dsm.transform * (0, 0)
    east, south = dsm.transform * (w, h)
    for shot in shots:
        e, n = shot.centre[:2]
        away = max(west - e, e - east, south - n, n - north, 0.0)
        if away > 1000:
            print(f"warning: camera {shot.name} is {away:.0f} m outside the DSM; is reconstruction.json "
                  "georeferenced (world = DSM CRS - reference_lla)?", file=sys.stderr)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    p.add_argument("--odm", type=Path, required=True, metavar="DIR",
                   help="ODM folder with images/, opensfm/reconstruction.json and odm_dem/dsm.tif")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--gsd", type=float, default=0.1, help="orthophoto pixel size in metres (default 0.1)")
    args = p.parse_args(argv)
    if not args.gsd > 0:
        p.error(f"--gsd must be positive, got {args.gsd}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Write the leave-one-out orthophotos, truth.csv, cameras.json and dsm.tif."""
    args = parse_args(argv)
    try:
        photos, recon_path, dsm_path = find_layout(args.odm)
        recon = read_reconstruction(recon_path)
        dsm = read_dsm(dsm_path)
        shots = read_shots(recon, photos, world_offset(recon, dsm.crs))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(shots) < 2:
        print("error: leave-one-out needs at least two photos with shots", file=sys.stderr)
        return 2
    report_sizes(shots, recon)
    check_centres(shots, dsm)
    args.out.mkdir(parents=True, exist_ok=True)
    for held in shots:
        others = [s for s in shots if s is not held]
        grid = grid_over(footprint(others, dsm), dsm, args.gsd)
        rgb, mask = orthorectify(others, dsm, grid)
        path = args.out / f"ortho_without_{held.name}.tif"
        write_ortho(path, rgb, mask, grid, dsm.crs)
        print(f"{path}: {grid.width}x{grid.height} px at {args.gsd:g} m, {mask.mean():.1%} seen")
    write_truth(args.out / "truth.csv", shots, dsm)
    write_cameras(args.out / "cameras.json", recon, shots)
    shutil.copyfile(dsm.path, args.out / "dsm.tif")
    print(f"wrote {args.out / 'truth.csv'}, {args.out / 'cameras.json'}, {args.out / 'dsm.tif'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
