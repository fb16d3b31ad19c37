"""Photo -> position: retrieve the top-k gallery tiles and fuse their centres into one estimate."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.images import shape_warning
from ..geodesy import LocalFrame, haversine_m
from ..registration import (
    Matcher,
    PhotoQuery,
    Plane,
    Pose,
    RegisterConfig,
    Registrar,
    Registration,
    corner_pixels,
    free_focal,
    ground_at_pixels,
    homography_jacobian,  # fmt: skip
    solve_pose,
)
from ..registration.matchers import AUTO
from ..registration.pose import radial_distortion, rotation
from ..registration.priors import Prior, merged, recorded_prior, xmp_packet
from . import terrain
from .encoders import Encoder, index_encoder
from .fallback import TileFallback, shipped
from .imaging import open_photo, preprocess
from .index import GalleryIndex
from .intrinsics import Intrinsics, check_fov, from_exif, from_fov, lens_gap, recorded_size, undistort
from .lens import CameraFile, dji_dewarp, read_camera_file
from .reference_features import INVARIANT_KIND, LEARNED_KIND, ReferenceSettings
from .tiles import NoReference, Tile
from .windows import WindowCache, window_key


@dataclass(frozen=True)
class Match:
    rank: int  # by descriptor similarity
    id: str
    score: float
    latitude: float
    longitude: float
    footprint_m: float
    inliers: int = 0  # homography inliers against the photo (0 when not registered)
    verified_rank: int | None = None  # rank after re-ranking by inliers (None when not registered)


@dataclass(frozen=True)
class Region:
    """Where a photo is known to be from (a flight's prediction): only tiles reaching within `radius_m` metres of
    (latitude, longitude) are searched."""

    latitude: float
    longitude: float
    radius_m: float
    footprint: tuple[tuple[float, float], ...] | None = None  # (latitude, longitude) where the photo's corners are
    # expected (upper left, clockwise; a flight's frame-to-frame motion): learned features match the photo warped
    # there instead of searching its orientation


@dataclass(frozen=True)
class Localization:
    """The answer for one photo: ranked tiles, the camera fix (or why there is none), a tile-level estimate, timings.

    `camera` is {latitude, longitude, height_m, heading_deg, pitch_deg} when `fix`; `radius_m` its 95 % horizontal
    radius in metres. `look_at` is the ground point at the photo centre, `footprint` the ground corners of the
    photo ([lat, lon] x 4, clockwise from the upper left), both whenever a candidate registers. `estimate` is the
    camera position when `fix`, else the tile-level answer (estimate_position: the best tile's centre with a
    calibrated 95 % radius, and `elsewhere` when the photo is probably of a place outside the index).
    """

    name: str
    matches: list[Match]
    latitude: float
    longitude: float
    radius: float
    model_s: float  # model time per image (batch time / batch size)
    search_s: float
    fix: bool = False
    reason: str = "registration is off"
    camera: dict | None = None
    look_at: dict | None = None
    footprint: list | None = None
    radius_m: float | None = None
    inliers: int = 0
    intrinsics: str | None = None  # where the focal length came from
    prior: dict | None = None  # {heading_deg, pitch_deg, altitude_m, source} known before matching
    orientation_deg: float | None = None  # image-up azimuth the photo was matched at (learned features)
    features: str | None = None  # whose matches registered the photo (sift, xfeat...), whenever a candidate does
    register_s: float = 0.0
    warnings: list = field(default_factory=list)
    elsewhere: bool = False  # no fix, and the best tile scores like photos of places outside the index

    @property
    def estimate(self) -> dict:
        """{latitude, longitude, radius_m, source}: the camera when there is a fix, else the tile-level estimate."""
        if self.fix:
            return {"latitude": self.camera["latitude"], "longitude": self.camera["longitude"],
                    "radius_m": self.radius_m, "source": "camera", "probably_elsewhere": False}  # fmt: skip
        return {"latitude": self.latitude, "longitude": self.longitude, "radius_m": self.radius, "source": "tiles",
                "probably_elsewhere": self.elsewhere}  # fmt: skip

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("latitude", "longitude", "radius"):
            out.pop(key)
        out["estimate"] = self.estimate
        return out


def softmax_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = (np.asarray(scores, dtype=np.float64) - np.max(scores)) / temperature
    w = np.exp(z)
    return w / w.sum()


def best_match(matches: Sequence[Match]) -> Match:
    """The candidate verification put first (retrieval's first where it did not re-rank)."""
    return min(matches, key=lambda m: (m.verified_rank or m.rank, m.rank))


def estimate_position(matches: Sequence[Match], fallback: TileFallback | None, layout: np.ndarray | None = None,
                      registered: bool = False) -> tuple[float, float, float, bool]:  # fmt: skip
    """The tile-level answer (latitude, longitude, radius in metres, probably elsewhere): the best candidate's
    centre (after verification where that re-ranked them), the 95 % radius the calibration earned for its
    similarity over the index's tile `layout` ((n, 2) latitudes and longitudes; the candidates when None), and
    whether the photo is probably of a place outside the index (never when a candidate `registered`).

    Without a calibration (a model none was shipped for) the radius is the candidates' RMS distance from the
    best, at least half a tile: a size, not a measured 95 % radius.
    """
    best = best_match(matches)
    if layout is None:
        layout = np.array([(m.latitude, m.longitude) for m in matches])
    if fallback is not None:
        d = haversine_m(best.latitude, best.longitude, layout[:, 0], layout[:, 1])
        elsewhere = fallback.elsewhere(best.score) and not registered
        return best.latitude, best.longitude, fallback.radius_m(best.score, best.footprint_m, d), elsewhere
    d = haversine_m(best.latitude, best.longitude, [m.latitude for m in matches], [m.longitude for m in matches])
    return best.latitude, best.longitude, max(float(np.sqrt(np.mean(np.square(d)))), best.footprint_m / 2), False


DEFAULT_REGISTER = RegisterConfig()
NO_REFERENCE = "tile-level answer only"
MIN_PHOTO_PX = 64  # smaller photos hold too little to retrieve or register
NO_FOCAL_HEAD = "the camera position needs the focal length in pixels, and the photo's EXIF does not give it"
NO_FOCAL = f"{NO_FOCAL_HEAD} (FocalLength with the sensor size FocalPlaneXResolution, or FocalLengthIn35mmFilm)"


class Localizer:
    """An encoder and a gallery index that agree on the model, and a registrar; safe to call from several threads.

    register=None answers with tiles only. `camera` is the lens of every photo (a camera file, lens.py); else
    each photo's own record (DJI DewarpData, EXIF focal length); `fov_deg` the lens to assume for photos that
    record none. `prior` (heading, pitch, altitude) stands in for what photos record, value by value.
    """

    def __init__(self, encoder: Encoder, index: GalleryIndex, k: int = 5, temperature: float = 0.02,
                 register: RegisterConfig | None = DEFAULT_REGISTER, fov_deg: float | None = None,
                 prior: Prior | None = None, camera: CameraFile | None = None) -> None:  # fmt: skip
        if diff := index.identity.mismatch(encoder.identity):
            raise ValueError(
                f"the gallery index at {index.folder} was built with a different model (index vs given: {diff}); "
                "use the model it was built with or rebuild the index"
            )
        if k < 1:
            raise ValueError(f"-k (candidates to verify) must be at least 1, got {k}")
        softmax_weights(np.zeros(1), temperature)  # validates the temperature
        if fov_deg is not None:
            check_fov(fov_deg)
        self.encoder, self.index, self.k, self.temperature = encoder, index, k, temperature
        self.notes: list[str] = []  # said once per localizer (the CLI prints them, the service reports them)
        self.registrar = _registrar(register, index, self.notes) if register is not None else None
        self.windows = None
        if register is not None:
            self.windows = WindowCache(register.margin, register.reference_max_px, terrain=terrain.load(index.folder))
        self.fallback = shipped(index.identity.checkpoint_sha256, index.identity.image_size)
        self._layout: np.ndarray | None = None
        if self.fallback is None:
            self.notes.append("tile-level radii (answers without a camera fix) are not calibrated for this model at "
                              f"{index.identity.image_size} px: they give the candidates' spread, not a measured "
                              "95 % radius")  # fmt: skip
        self.fov_deg, self.camera = fov_deg, camera
        if camera is not None and fov_deg is not None:
            self.notes.append(f"--camera {camera.path} gives the lens of every photo: --fov {fov_deg:g} is not used")
        self.prior = merged(Prior(), prior.heading_deg, prior.pitch_deg, prior.altitude_m) if prior else Prior()
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return getattr(self.encoder, "backend", type(self.encoder).__name__)

    def intrinsics(self, image: Image.Image, exif: Image.Exif | None, name: str, fov_deg: float | None = None,
                   data: bytes | None = None, camera: CameraFile | None = None,
                   label: str = "--{}") -> Intrinsics | None:  # fmt: skip
        """The photo's lens: the camera file (`camera`, else --camera), else DJI XMP DewarpData in the file's
        `data`, else its EXIF focal length, else the field of view given (`fov_deg`, named by `label`, else
        --fov), else None.

        A camera file that does not fit the photo, malformed DewarpData, or a nonsense EXIF focal length raises
        ValueError naming it (the EXIF one only when no field of view is given to use instead).
        """
        fov = fov_deg if fov_deg is not None else self.fov_deg
        flag = label.format("fov") if fov_deg is not None else "--fov"
        if fov is not None:
            check_fov(fov)
        camera = camera or self.camera
        if camera is not None:
            return camera.for_photo(*image.size, name=name)
        if data and (lens := dji_dewarp(xmp_packet(data), *image.size, recorded_size(exif), name)) is not None:
            return lens
        try:
            found = from_exif(exif, *image.size, label=name)
        except ValueError as exc:
            if fov is None:
                raise
            return replace(from_fov(fov, *image.size), source=f"{flag} {fov:g} (EXIF refused: {exc})")
        if found is None and fov is not None:
            found = from_fov(fov, *image.size, flag)
        return found

    def photo_prior(self, data: bytes | None, exif: Image.Exif | None, name: str, heading: float | None = None,
                    pitch: float | None = None, altitude: float | None = None,
                    label: str = "--{}") -> Prior:  # fmt: skip
        """What the file records (DJI XMP, EXIF GPSImgDirection; a malformed record becomes a warning), overridden
        by the values given here (ValueError naming a bad one, `label` formatting its name), then by the
        localizer's own (--heading/--pitch/--altitude)."""
        own = self.prior
        return merged(recorded_prior(data or b"", exif, name), own.heading_deg if heading is None else heading,
                      own.pitch_deg if pitch is None else pitch, own.altitude_m if altitude is None else altitude,
                      label)  # fmt: skip

    def localize(self, images: Sequence[Image.Image], names: Sequence[str] | None = None, k: int | None = None,
                 intrinsics: Sequence[Intrinsics | None] | None = None,
                 priors: Sequence[Prior | None] | None = None,
                 regions: Sequence[Region | None] | None = None) -> list[Localization]:  # fmt: skip
        """Localize decoded, upright RGB images in one batch; `intrinsics` per image (None: use --fov or none),
        `priors` per image (None: the localizer's own), `regions` per image (None: the whole index) the only
        tiles searched."""
        if not images:
            return []
        names = list(names) if names is not None else [f"image-{i}" for i in range(len(images))]
        for name, img in zip(names, images, strict=True):
            check_photo_size(img, name)
        if intrinsics is None:
            intrinsics = [from_fov(self.fov_deg, *img.size) if self.fov_deg else None for img in images]
        if priors is None:
            priors = [None] * len(images)
        k = k or self.k
        batch = preprocess(list(images), self.encoder.identity.image_size)
        with self._lock:  # one forward at a time: keeps per-image timings honest and backends thread-safe
            start = time.perf_counter()
            desc = self.encoder.encode(batch)
            model_s = (time.perf_counter() - start) / len(images)
            start = time.perf_counter()
            more = self.registrar.cfg.expand_k if self.registrar is not None else 0
            scores, idx = self.index.search(desc, max(k, more))
            for row, region in enumerate(regions or ()):
                if region is not None:
                    scores[row], idx[row] = self._search_within(desc[row], region, idx.shape[1])
            search_s = (time.perf_counter() - start) / len(images)
        results = []
        regions = regions or [None] * len(images)
        for name, img, intr, prior, region, row_s, row_i in zip(names, images, intrinsics, priors, regions, scores,
                                                                idx, strict=True):  # fmt: skip
            tiles = [self.index.tiles[int(i)] for i in row_i if i >= 0]
            matches = [
                Match(r + 1, t.id, float(s), t.latitude, t.longitude, t.footprint_m)
                for r, (s, t) in enumerate(zip(row_s, tiles, strict=False))
            ]
            extra, matches = matches[k:], matches[:k]
            if not matches:
                raise ValueError(f"the index returned no tile for {name}: an approximate index probed only empty "
                                 "lists; rebuild it with --index-type flat or a larger nprobe")
            prior = prior or self.prior
            # the tile-level answer is filled in once, from the candidates as verification leaves them
            base = Localization(name, matches, matches[0].latitude, matches[0].longitude, 0.0, model_s, search_s,
                                intrinsics=intr.source if intr else None,
                                warnings=photo_warnings(img) + ([prior.problem] if prior.problem else []),
                                prior=None if prior.empty else {k: v for k, v in asdict(prior).items()
                                                                if k != "problem"})  # fmt: skip
            if self.registrar is None:
                results.append(self._tile_level(base))
                continue
            start = time.perf_counter()
            img, intr = undistort(img, intr, self.registrar.cfg.photo_max_px)
            query = self.registrar.query(img, prior.heading_deg)
            if region is not None and region.footprint is not None:
                self._expect(query, tiles, region.footprint)
            found = self._register(img, intr, tiles[:k], base, query)
            searching = not found.fix and (intr is not None or found.look_at is None)
            if searching and extra and not found.reason.startswith((NO_REFERENCE, *LENS_PROBLEMS)):
                # none of the top k holds up: the next candidates too, and they join the answer's matches
                wider = self._register(img, intr, tiles, replace(base, matches=matches + extra), query)
                found = wider if wider.fix else found
            results.append(replace(self._tile_level(found), register_s=time.perf_counter() - start))
        return results

    def _expect(self, query: PhotoQuery, tiles: Sequence[Tile], footprint: Sequence[Sequence[float]]) -> None:
        """Guesses (photo px -> window px) for the rematch_max candidates nearest where the footprint puts the
        photo's centre; candidates without reference imagery get none (their registration says why)."""
        w, h = query.size
        corners = np.asarray(footprint, dtype=np.float64).reshape(4, 2)
        px = np.float32(corner_pixels(query.size))
        frame = LocalFrame(*corners.mean(0))
        to_en = cv2.getPerspectiveTransform(px, np.float32(np.c_[frame.to_local(corners[:, 0], corners[:, 1])]))
        centre = cv2.perspectiveTransform(np.float64([[[(w - 1) / 2, (h - 1) / 2]]]), to_en.astype(np.float64))[0, 0]
        lat, lon = frame.to_geo(*centre)
        near = np.argsort([haversine_m(lat, lon, t.latitude, t.longitude) for t in tiles], kind="stable")
        for tile in (tiles[int(i)] for i in near[: self.registrar.cfg.rematch_max]):
            try:
                window = self.windows.get(tile)
            except NoReference:
                continue
            tile_frame = LocalFrame(tile.latitude, tile.longitude)
            en = np.c_[tile_frame.to_local(corners[:, 0], corners[:, 1])]
            to_window = np.linalg.inv(np.vstack([window.to_ground, [0.0, 0.0, 1.0]]))
            query.guesses[window.key] = to_window @ cv2.getPerspectiveTransform(px, np.float32(en))

    def _search_within(self, desc: np.ndarray, region: Region, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, tile positions) among the tiles that reach into `region`, padded with (-inf, -1) as
        faiss pads; the whole index's top k where no tile does."""
        layout = self.layout()
        near = haversine_m(region.latitude, region.longitude, layout[:, 0], layout[:, 1])
        reach = np.array([t.footprint_m for t in self.index.tiles]) / 2
        inside = np.flatnonzero(near <= region.radius_m + reach)
        if not len(inside):
            scores, idx = self.index.search(desc[None], k)
            return scores[0], idx[0]
        sims = np.asarray(self.index.descriptors[inside], dtype=np.float32) @ desc.astype(np.float32)
        order = np.argsort(-sims, kind="stable")[:k]
        scores, idx = np.full(k, -np.inf, dtype=np.float32), np.full(k, -1, dtype=np.int64)
        scores[: len(order)], idx[: len(order)] = sims[order], inside[order]
        return scores, idx

    def layout(self) -> np.ndarray:
        """(n, 2) latitudes and longitudes of the index's tiles (kept until the index grows; two threads that
        build it at once build the same array, so no lock is held against the model's forward)."""
        if self._layout is None or len(self._layout) != len(self.index.tiles):
            self._layout = np.array([(t.latitude, t.longitude) for t in self.index.tiles], dtype=np.float64)
        return self._layout

    def _tile_level(self, found: Localization) -> Localization:
        """The tile-level answer again from the candidates as verification left them, and why when elsewhere."""
        if found.fix:
            return replace(found, elsewhere=False)
        lat, lon, radius, elsewhere = estimate_position(found.matches, self.fallback, self.layout(),
                                                        found.look_at is not None)  # fmt: skip
        reason = found.reason
        if elsewhere:
            best = best_match(found.matches)
            reason += (f"; probably not in this index: the best tile scores {best.score:.3f}, under the "
                       f"{self.fallback.elsewhere_below:.3f} below which photos of places outside an index "
                       "outnumbered those inside when calibrated")  # fmt: skip
        return replace(found, latitude=lat, longitude=lon, radius=radius, elsewhere=elsewhere, reason=reason)

    def _register(self, photo: Image.Image, intr: Intrinsics | None, tiles: list[Tile], base: Localization,
                  query: PhotoQuery) -> Localization:  # fmt: skip
        """Verify the candidates, re-rank them by inliers, and solve the camera from the best one."""
        try:
            windows = [self.windows.get(tile) for tile in tiles]
        except NoReference as exc:
            return replace(base, reason=f"{NO_REFERENCE}: {exc}")
        regs = self.registrar.register(query, windows)
        found = self._verified(photo, intr, tiles, base, regs)
        if (found.fix or intr is None or found.reason.startswith(LENS_PROBLEMS)
                or not self.registrar.second_chance(regs)):  # no lens, or a wrong one: no camera to gain  # fmt: skip
            return found
        again = self._verified(photo, intr, tiles, base, self.registrar.register(query, windows, learned=True))
        return again if again.fix else found

    def _verified(self, photo: Image.Image, intr: Intrinsics | None, tiles: list[Tile], base: Localization,
                  regs: Sequence[Registration]) -> Localization:  # fmt: skip
        """The answer from the candidates' registrations: re-ranked by inliers, the camera from the best one."""
        order = sorted(range(len(tiles)), key=lambda i: (not regs[i].verified, -regs[i].inliers, i))
        out = replace(base, inliers=regs[order[0]].inliers,
                      orientation_deg=regs[order[0]].heading_deg)  # fmt: skip
        if not regs[order[0]].verified:  # chance inlier counts are no ranking: retrieval's order stands
            why = f"no candidate registers to the photo (the most matched: {regs[order[0]].reason})"
            return _reranked(replace(out, reason=why), regs, range(len(tiles)))
        first = None
        for i in (i for i in order if regs[i].verified):  # the best verified candidate whose geometry holds up
            answer = self._solve(photo, intr, tiles[i], regs[i], out)
            if answer.fix or answer.reason.startswith(LENS_PROBLEMS):  # a wrong lens is wrong for every candidate
                return _reranked(answer, regs, [i, *(j for j in order if j != i)])
            first = first or answer
        return _reranked(first, regs, order)

    def _solve(self, photo: Image.Image, intr: Intrinsics | None, tile: Tile, reg: Registration,
               out: Localization) -> Localization:  # fmt: skip
        """Look-at point, footprint and camera pose from one verified candidate, with the checks behind a fix.

        With a DSM, every match lifted through it gives one 6-DoF pose. On flat ground, of the candidate's planes
        the ground is the lowest (see _ground_plane); without a focal length, the dominant plane gives the look-at
        point and footprint.
        """
        cfg = self.registrar.cfg
        w, h = photo.size
        centre_px = ((w - 1) / 2, (h - 1) / 2)
        reach = tile.footprint_m * (0.5 + cfg.margin) * 1.5
        terrain = reg.window.terrain is not None and reg.matches is not None
        reason, chosen, solved = "", None, []
        for n, plane in enumerate(reg.planes):
            centre = ground_at_pixels(plane.h_pix_to_ground, [centre_px], plane.pixels[0])
            if centre is None or np.abs(centre).max() > reach:
                reason = reason or "the photo centre maps off the reference window (degenerate homography)"
                continue
            if intr is None:
                chosen = (plane, centre[0], None)
                break
            need = cfg.min_inliers_for(n, reg.matcher)
            if terrain:  # every match lifted through the DSM: one 6-DoF pose, no plane to choose
                pose, why = self._terrain_pose(plane, reg, intr, centre_px, need)
                chosen = (plane, centre[0], pose) if pose is not None else None
                reason = why
                break
            pose, why = self._pose(plane, intr, centre_px, reg.window.metres_per_px, need)
            if pose is None:
                reason = reason or why
            else:
                solved.append((plane, centre[0], pose))
        spread = 0.0
        if solved:
            chosen, spread = self._ground_plane(solved, reg.matcher)
        if chosen is None:
            return replace(out, reason=reason)
        plane, centre, pose = chosen
        frame = LocalFrame(tile.latitude, tile.longitude)
        out = replace(out, look_at=_latlon(frame, centre), inliers=len(plane.pixels), features=reg.matcher)
        corners = ground_at_pixels(plane.h_pix_to_ground, corner_pixels(photo.size), plane.pixels[0])
        if corners is not None:
            out = replace(out, footprint=[list(_latlon(frame, c).values()) for c in corners])
        if intr is None:
            return replace(out, reason=f"{NO_FOCAL}: give the lens's field of view (--fov DEG; "
                                       "?fov=DEG over HTTP) or a camera file (--camera FILE); the look-at point "
                                       "and footprint are given")  # fmt: skip
        radius = max(self._radius(pose, reg.matcher), spread)
        why, moved, doubt = self._lens_check(pose, plane, reg, intr, centre_px, terrain, photo.size)
        if why:
            return replace(out, reason=why)
        radius = float(np.hypot(np.hypot(radius, gravity_doubt_m(pose, centre, out.prior)), moved)) + doubt
        if radius > cfg.max_radius_m:
            return replace(out, reason=f"the fit pins the camera only to +/- {radius:.0f} m (more than "
                                       f"{cfg.max_radius_m:g} m)")  # fmt: skip
        height, altitude = float(pose.centre[2]), None
        if terrain:  # heights above the DSM's datum: the camera's, and the ground's below it
            altitude = height
            height -= pose.ground_below_m
        camera = {**_latlon(frame, pose.centre[:2]), "height_m": height, "altitude_m": altitude,
                  "heading_deg": pose.heading_deg, "pitch_deg": pose.pitch_deg,
                  "terrain": "dsm" if terrain else "flat"}  # fmt: skip
        return replace(out, fix=True, reason="", camera=camera, radius_m=radius, inliers=int(pose.inliers.sum()))

    def _lens_check(self, pose: Pose, plane: Plane, reg: Registration, intr: Intrinsics, centre_px, terrain: bool,
                    size: tuple[int, int]) -> tuple[str, float, float]:  # fmt: skip
        """Whether the lens is what the matches show: (why not, or ""; how far its focal length set free moves the
        camera (noise), metres; how far focal lengths the matches do not tell apart move it (a bias), metres)."""
        cfg = self.registrar.cfg
        w, h = size
        wrong = ("the lens is wrong (check --camera/--fov)" if terrain else "the lens is wrong or the ground is not "
                 "flat (check --camera/--fov, or index the terrain with --dsm)")  # fmt: skip
        radial = radial_distortion(pose, intr.matrix)
        # learned matches bend more on their own (whole-pixel keypoints, roofs, shadows: a right cross-date fix
        # showed k1 +0.13 +- 0.02), as much more as their radius scale says
        k1_bound = DISTORTION_K1 * cfg.radius_scale_for(reg.matcher) / cfg.radius_scale
        if (radial is not None and abs(radial[0]) > k1_bound and abs(radial[2]) > DISTORTION_SHARE
                and abs(radial[0]) > DISTORTION_SIGMAS * radial[1]):  # fmt: skip
            left = (f"left after undistorting with the lens ({intr.source}): its focal length or distortion is "
                    "wrong (check --camera)") if "undistorted" in intr.source else (
                f"that the lens ({intr.source}) does not model: give the camera's calibration (--camera "
                "cameras.json), or the photo as the camera wrote it (DJI XMP DewarpData)")  # fmt: skip
            if not terrain:  # relief seen as flat ground bends the matches too (a real frame: k1 -0.17 so)
                left += ", or the ground is not flat (index the terrain with --dsm)"
            return (f"{UNMODELLED_DISTORTION} (k1 about {radial[0]:+.2f}: {100 * radial[2]:+.0f} % "
                    f"at the photo's edge) {left}"), 0.0, 0.0  # fmt: skip
        free = free_focal(pose, intr.matrix)
        if (free is not None and abs(free[0] / intr.focal_px - 1) > cfg.focal_tolerance
                and abs(free[0] - intr.focal_px) > FOCAL_SIGMAS * free[1]):  # fmt: skip
            fov = math.degrees(2 * math.atan(max(w, h) / (2 * free[0])))
            return (f"{LENS_DISAGREES} of {free[0]:.0f} px ({fov:.0f} deg field of view), "
                    f"{100 * (free[0] / intr.focal_px - 1):+.0f} % from the lens's {intr.focal_px:.0f} px "
                    f"({intr.source}): {wrong}"), 0.0, 0.0  # fmt: skip
        need = cfg.min_inliers_for(next(i for i, p in enumerate(reg.planes) if p is plane), reg.matcher)
        sweep = self._focal_sweep(plane, reg, intr, centre_px, need, terrain)
        lens_n = max(sweep[int(np.argmin(np.abs(FOCAL_SWEEP - 1)))][1], int(pose.inliers.sum()))
        best_f, best_n, _ = max(sweep, key=lambda s: (s[1], -abs(s[0] / intr.focal_px - 1)))
        if (abs(best_f / intr.focal_px - 1) > cfg.focal_tolerance and best_n >= FOCAL_GAIN * lens_n
                and best_n - lens_n >= max(FOCAL_GAIN_MIN, math.sqrt(best_n))):  # more than counting noise  # fmt: skip
            fov = math.degrees(2 * math.atan(max(w, h) / (2 * best_f)))
            return (f"{LENS_DISAGREES} of about {best_f:.0f} px ({fov:.0f} deg field of view): {best_n} matches "
                    f"fit a camera with it, {lens_n} with the lens's {intr.focal_px:.0f} px ({intr.source}): "
                    f"{wrong}"), 0.0, 0.0  # fmt: skip
        # focal lengths the matches do not tell apart from the best: the camera anywhere their poses put it, a share
        # of it (a bias along the view, not noise, so it adds to the radius); a pose of FOCAL_DOUBT_INLIERS or more
        # inliers shows a wrong lens by the sweep's refusal above, and the share is smaller on flat ground, whose
        # gravity term already holds much of it
        doubt = 0.0
        if int(pose.inliers.sum()) < FOCAL_DOUBT_INLIERS:
            doubt = FOCAL_DOUBT_SHARE[terrain] * max(
                (float(np.hypot(*(c[:2] - pose.centre[:2]))) for f, n, c in sweep
                 if n and n >= best_n - 1 and abs(f / intr.focal_px - 1) <= FOCAL_DOUBT_SPAN + 1e-9), default=0.0)
        moved = cfg.focal_doubt_scale * float(np.hypot(*(free[2][:2] - pose.centre[:2]))) if free else 0.0
        return "", moved, doubt

    def _focal_sweep(self, plane: Plane, reg: Registration, intr: Intrinsics, centre_px, need: int,
                     terrain: bool) -> list[tuple[float, int, np.ndarray]]:  # fmt: skip
        """(focal length px, pose inliers, camera centre) with the pose solved again from all the matches at each of
        FOCAL_SWEEP times the lens's focal length (no pose: 0 inliers, centre NaN). The inliers peak at the focal
        length the photo was taken with even where the fit of one pose's inliers (pose.free_focal) stays near a
        wrong lens: a lens 25 % short whose own inliers called for 3 % more had 28 inliers, the true one 38."""
        out = []
        for share in FOCAL_SWEEP:
            scaled = replace(intr, focal_px=intr.focal_px * share,
                             focal_y_px=intr.focal_y_px and intr.focal_y_px * share)  # fmt: skip
            if terrain:
                pose, _ = self._terrain_pose(plane, reg, scaled, centre_px, need)
            else:
                pose, _ = self._pose(plane, scaled, centre_px, reg.window.metres_per_px, need)
            out.append((scaled.focal_px, 0, np.full(3, np.nan)) if pose is None else
                       (scaled.focal_px, int(pose.inliers.sum()), pose.centre))  # fmt: skip
        return out

    def _radius(self, pose: Pose, matcher: str) -> float:
        """The fix's 95 % radius from the fit alone: first order, scaled by what calibration measured."""
        cfg = self.registrar.cfg
        return max(cfg.radius_floor_m, cfg.radius_scale_for(matcher) * pose.radius95_m())

    def _ground_plane(self, solved: list, matcher: str) -> tuple[tuple, float]:
        """The plane that is the ground, and how far (metres) the planes' cameras disagree horizontally.

        A roof parallel to the ground gives the same camera, lower by the roof's height: a plane whose camera
        agrees (within both radii) with the dominant plane's and stands higher replaces it. A plane whose camera
        lies elsewhere contradicts the flat-ground model (a slope, unknown relief): the dominant plane stands and
        the disagreement becomes the least radius, so an unknown terrain gives an honest radius or no fix.
        """
        chosen, spread = solved[0], 0.0
        for other in solved[1:]:
            d = float(np.hypot(*(other[2].centre[:2] - solved[0][2].centre[:2])))
            if d <= self._radius(solved[0][2], matcher) + self._radius(other[2], matcher):
                if other[2].centre[2] > chosen[2].centre[2]:
                    chosen = other
            else:
                spread = max(spread, d)
        return chosen, spread

    def _pose(self, plane: Plane, intr: Intrinsics, centre_px, reference_m_per_px: float,
              need: int) -> tuple[Pose | None, str]:  # fmt: skip
        """The camera pose from one plane's correspondences, or None and why."""
        pnp_px = self._pnp_px(plane, centre_px, reference_m_per_px)
        pose = solve_pose(plane.ground, plane.pixels, intr.matrix, pnp_px, need)
        if pose is None:
            return None, f"no camera pose above the ground explains {need} or more matches"
        return (None, why) if (why := self._height_problem(float(pose.centre[2]))) else (pose, "")

    def _pnp_px(self, plane: Plane, centre_px, reference_m_per_px: float) -> float:
        """The homography's tolerance (ransac_px reference pixels) in photo pixels at the photo centre."""
        cfg = self.registrar.cfg
        return max(1.0, cfg.ransac_px * reference_m_per_px / photo_m_per_px(plane.h_pix_to_ground, centre_px))

    def _height_problem(self, above_m: float) -> str:
        """Why a camera this high above the ground is no fix, or ""."""
        cfg = self.registrar.cfg
        if cfg.min_height_m <= above_m <= cfg.max_height_m:
            return ""
        return (f"implausible camera height {above_m:.1f} m above the ground "
                f"(allowed {cfg.min_height_m:g}..{cfg.max_height_m:g} m)")  # fmt: skip

    def _terrain_pose(self, plane: Plane, reg: Registration, intr: Intrinsics, centre_px,
                      need: int) -> tuple[Pose | None, str]:  # fmt: skip
        """The camera from every tentative match whose reference pixel the DSM lifts to 3D (PnP RANSAC), or None
        and why."""
        window = reg.window
        src, dst = reg.matches
        heights = window.heights_at(dst)
        known = np.isfinite(heights)
        if known.sum() < need:
            return None, (f"the DSM has heights under only {int(known.sum())} of the {len(dst)} matches "
                          f"({need} needed)")  # fmt: skip
        en = dst[known] @ window.to_ground[:, :2].T + window.to_ground[:, 2]
        pnp_px = self._pnp_px(plane, centre_px, window.metres_per_px)
        pose = solve_pose(np.c_[en, heights[known]], src[known], intr.matrix, pnp_px, need)
        if pose is None:
            return None, f"no camera pose above the terrain explains {need} or more matches"
        below = self._ground_below(reg.window, pose)
        if not math.isfinite(below):
            below = float(np.median(heights[known][pose.inliers]))
        if why := self._height_problem(float(pose.centre[2]) - below):
            return None, why
        return replace(pose, ground_below_m=below), ""

    @staticmethod
    def _ground_below(window, pose: Pose) -> float:
        """The DSM's height under the camera, NaN where it has none."""
        a = np.vstack([window.to_ground, [0.0, 0.0, 1.0]])
        uv = np.linalg.solve(a, np.r_[pose.centre[:2], 1.0])[:2]
        return float(window.heights_at(uv[None])[0])

    def localize_files(self, paths: Sequence[str], batch_size: int = 16, k: int | None = None,
                       errors: list[tuple[str, str]] | None = None) -> list[Localization]:  # fmt: skip
        """Localize photos on disk, their focal lengths read from EXIF.

        A photo that cannot be read (or whose EXIF lens is refused) raises ValueError/FileNotFoundError, or, when
        `errors` is a list, is skipped and listed there as (path, message) so the other photos are still answered.
        """
        out: list[Localization] = []
        for start in range(0, len(paths), batch_size):
            chunk, photos, intr, priors, exifs = [], [], [], [], []
            for path in (str(p) for p in paths[start : start + batch_size]):
                try:
                    img, exif = open_photo(path)
                    data = Path(path).read_bytes()
                    lens = self.intrinsics(img, exif, path, data=data)
                    prior = self.photo_prior(data, exif, path)
                    check_photo_size(img, path)
                except (ValueError, FileNotFoundError) as exc:
                    if errors is None:
                        raise
                    errors.append((path, str(exc)))
                    continue
                chunk.append(path)
                photos.append(img)
                intr.append(lens)
                priors.append(prior)
                exifs.append(exif)
            answers = self.localize(photos, chunk, k=k, intrinsics=intr, priors=priors)
            out.extend(replace(a, reason=a.reason.replace(NO_FOCAL, f"{NO_FOCAL_HEAD} ({lens_gap(x)})", 1))
                       for a, x in zip(answers, exifs, strict=True))  # the EXIF says exactly what it lacks
        return out


def _registrar(cfg: RegisterConfig, index: GalleryIndex, notes: list[str]) -> Registrar:
    """A registrar with the index's stored reference features preloaded (SIFT's where stored: an index built before
    has its windows described per photo); `auto` on an index without learned ones registers with SIFT alone and
    says so (computing them per query would cost seconds a photo)."""
    registrar = Registrar(cfg)
    if registrar.learned is not None and not _preload(registrar, index, registrar.learned, LEARNED_KIND):
        why = ("holds no learned reference features (an index built before they were stored, with "
               "--no-reference-features, or the demo's same-date one, which SIFT registers)"
               if index.reference_settings is None else "stored its learned reference "
               f"features with other settings ({index.reference_settings})")  # fmt: skip
        if cfg.features == AUTO:
            notes.append(f"the gallery index {index.folder} {why}: registering with SIFT alone, which fails across "
                         "dates and sensors; rebuild it with `spikevimformer index build` for learned "
                         "features")  # fmt: skip
            registrar = Registrar(replace(cfg, features="sift"))
        else:
            notes.append(f"the gallery index {index.folder} {why}: --features {cfg.features} computes them per "
                         "photo (slow); rebuild the index with `spikevimformer index build` (without "
                         "--no-reference-features) to store them")  # fmt: skip
    _preload(registrar, index, registrar.invariant, INVARIANT_KIND)
    return registrar


def _preload(registrar: Registrar, index: GalleryIndex, matcher: Matcher | None, kind: str) -> bool:
    """Whether the index stores `matcher`'s reference features with the registrar's settings (then preloaded)."""
    cfg = registrar.cfg
    if matcher is None or index.feature_settings.get(kind) != asdict(ReferenceSettings.of(cfg, matcher.name)):
        return False
    stored = index.reference_features(kind)
    registrar.preload({(window_key(t, cfg.margin, cfg.reference_max_px), matcher.name): stored[t.id]
                       for t in index.tiles if t.id in stored})  # fmt: skip
    return True


def check_photo_size(img: Image.Image, name: str) -> None:
    """Refuse photos under MIN_PHOTO_PX a side, naming them."""
    if min(img.size) < MIN_PHOTO_PX:
        raise ValueError(f"{name} is {img.size[0]}x{img.size[1]} px; photos need at least {MIN_PHOTO_PX} px on "
                         "each side")  # fmt: skip


LENS_DISAGREES = "the matches call for a focal length"  # reasons that end the search: no candidate can help
UNMODELLED_DISTORTION = "the matches show lens distortion"
LENS_PROBLEMS = (LENS_DISAGREES, UNMODELLED_DISTORTION)
DISTORTION_K1, DISTORTION_SHARE = 0.1, 0.015  # k1, and radial displacement at the farthest inlier (k1 r^2), a
# lens may leave unmodelled: four real DJI frames with a bare --fov showed k1 -0.14..-0.25 (2-9 % at the edge);
# right lenses on a hilly synthetic world up to |k1| 0.08 (1.8 %), on the real frames 0.006 (0.4 %)
DISTORTION_SIGMAS = 3.0  # and this many standard errors from 0 (a bare 256 px photo of a k1 -0.25 lens: -0.29 +- 0.08)
FOCAL_SWEEP = np.linspace(0.6, 1.6, 11)  # focal lengths (shares of the lens's) the pose is solved at again
FOCAL_GAIN, FOCAL_GAIN_MIN = 1.15, 3  # a focal length whose pose keeps this many times (and this many, and the
# square root of its count, more) inliers than the lens's, and further than focal_tolerance from it, contradicts the
# lens (calibrated with FOCAL_DOUBT_SPAN on seed 3030's hilly worlds, pinhole and k1 -0.25, lenses off by 0, 10, 15
# and 25 %; a right lens with 12 inliers against 15 at 1.4x it, on a flat world, set the square root: README)
FOCAL_DOUBT_SPAN = 0.3  # focal lengths within this share of the lens's whose poses join the radius
FOCAL_DOUBT_SHARE = {True: 0.5, False: 0.25}  # through a DSM / on flat ground: the share of the camera's move among
# them that joins the radius (through a DSM 0.25 was the least that held every wrong lens of the calibration, twice
# that for margin; on flat ground 0.25 turned the lenses 15-25 % off that escaped the refusal into no fix or one
# that holds, and kept every right fix of the calibration)
FOCAL_DOUBT_INLIERS = 30  # poses with this many inliers or more get no focal doubt: no lens 15-25 % off escaped the
# sweep's refusal with as many (seed 3030, 640 photos; the median radius of right DSM fixes 6.4 -> 3.4 m)
FOCAL_SIGMAS = 4.0  # a focal length the matches call for this many standard errors away is a real disagreement


def gravity_doubt_m(pose: Pose, look_at_en: np.ndarray, prior: dict | None) -> float:
    """How far the camera may be off because the ground it was solved against is not what the model assumed, in
    metres: the angle between gravity in the camera as solved and as the gimbal recorded it (pitch, roll), times
    the distance to the ground point at the photo centre. A slope the flat-ground model cannot see tilts the
    solved camera by about the slope and moves it by about slant x tan(slope) (the gravity prior of PiLoT v2 and
    OrthoLoC); 0 without a recorded pitch."""
    if not prior or prior.get("pitch_deg") is None:
        return 0.0
    pitch, roll = math.radians(prior["pitch_deg"]), math.radians(prior.get("roll_deg") or 0.0)
    recorded = np.array([math.sin(roll) * math.cos(pitch), math.cos(roll) * math.cos(pitch), math.sin(pitch)])
    solved = rotation(pose.rvec) @ np.array([0.0, 0.0, -1.0])
    tilt = math.acos(float(np.clip(solved @ recorded, -1.0, 1.0)))
    slant = float(np.hypot(np.hypot(*(pose.centre[:2] - look_at_en)), pose.centre[2] - (pose.ground_below_m or 0.0)))
    return slant * math.tan(min(tilt, math.radians(60.0)))


def _reranked(result: Localization, regs: Sequence[Registration], order: Sequence[int]) -> Localization:
    """Each match with its inliers and its rank after verification (`order`: candidate positions, best first)."""
    rank = {i: r + 1 for r, i in enumerate(order)}
    return replace(result, matches=[replace(m, inliers=regs[i].inliers, verified_rank=rank[i])
                                    for i, m in enumerate(result.matches)])  # fmt: skip


def photo_m_per_px(h_pix_to_ground: np.ndarray, uv) -> float:
    """Ground metres per photo pixel at pixel uv: the square root of the homography's local area scale."""
    return float(np.sqrt(abs(np.linalg.det(homography_jacobian(h_pix_to_ground, uv)))))


def _latlon(frame: LocalFrame, en) -> dict:
    lat, lon = frame.to_geo(float(en[0]), float(en[1]))
    return {"latitude": float(lat), "longitude": float(lon)}


def photo_warnings(img: Image.Image) -> list[str]:
    """Shapes no drone camera makes (data.images.shape_warning): answers for them deserve less trust."""
    odd = shape_warning(*img.size)
    return [odd] if odd else []


def open_localizer(
    index_dir: str, checkpoint: str | None = None, variant: str | None = None, onnx: str | None = None,
    device: str = "cpu", k: int = 5, temperature: float = 0.02, init: str | None = None,
    register: RegisterConfig | None = DEFAULT_REGISTER, fov_deg: float | None = None, random_init: bool = False,
    prior: Prior | None = None, camera: str | None = None,
) -> Localizer:  # fmt: skip
    """A Localizer for the index in `index_dir`: with no model given, the weights the index was built with
    (see geo.encoders.index_encoder); the variant and image size always come from the index. `camera` is a
    camera file (lens.read_camera_file) for every photo."""
    lens = read_camera_file(camera) if camera else None
    index = GalleryIndex.load(index_dir)
    encoder = index_encoder(index, checkpoint, variant, onnx, device, init, random_init)
    return Localizer(encoder, index, k, temperature, register, fov_deg, prior, lens)


def format_table(results: Sequence[Localization]) -> str:
    """Readable report: one block per image, the camera fix (or why there is none) first."""
    lines = []
    for r in results:
        timing = f"model {r.model_s * 1e3:.1f} ms, search {r.search_s * 1e3:.2f} ms, registration {r.register_s:.2f} s"
        if r.fix:
            c = r.camera
            lines.append(f"{r.name}: camera {c['latitude']:.7f}, {c['longitude']:.7f} +/- {r.radius_m:.1f} m (95 %), "
                         f"{c['height_m']:.1f} m above ground"
                         + (f" ({c['altitude_m']:.1f} m above the DSM's datum)" if c.get("altitude_m") is not None
                            else "")
                         + f", heading {c['heading_deg']:.1f} deg, "
                         f"pitch {c['pitch_deg']:.1f} deg; pose from {r.inliers} matches ({timing})")  # fmt: skip
        elif r.look_at:  # registered without a pose: where the photo's centre lies is known, the camera not
            lines.append(f"{r.name}: no camera fix ({r.reason}); the photo's centre looks at "
                         f"{r.look_at['latitude']:.7f}, {r.look_at['longitude']:.7f} (registered on the orthophoto; "
                         f"the camera stands off from it) ({timing})")  # fmt: skip
        else:
            lines.append(f"{r.name}: no camera fix ({r.reason}); tile level: the camera within {r.radius:.0f} m "
                         f"(95 %) of {r.latitude:.6f}, {r.longitude:.6f}, the best tile's centre, if the photo "
                         f"shows this index's ground ({timing})")  # fmt: skip
        if r.look_at and r.fix:
            lines.append(f"  looks at {r.look_at['latitude']:.7f}, {r.look_at['longitude']:.7f}"
                         + (f"; focal length from {r.intrinsics}" if r.intrinsics else ""))  # fmt: skip
        lines.extend(f"  warning: {w}" for w in r.warnings)
        lines.append(f"  {'rank':>4}  {'tile':<28} {'score':>7}  {'latitude':>11} {'longitude':>11} "
                     f"{'inliers':>7} {'rank after verification':>23}")  # fmt: skip
        for m in r.matches:
            done = m.verified_rank is not None
            lines.append(f"  {m.rank:>4}  {m.id:<28} {m.score:>7.4f}  {m.latitude:>11.6f} {m.longitude:>11.6f} "
                         f"{m.inliers if done else '':>7} {m.verified_rank if done else '':>23}")  # fmt: skip
    return "\n".join(lines)
