"""`spikevimformer index build|add|info`: a geo-referenced gallery of tile descriptors in a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..fileio import folder_lock
from ..geo import reference_features, terrain
from ..geo.encoders import encode_tiles, index_encoder, open_encoder
from ..geo.index import GalleryIndex, IndexConfig
from ..geo.raster import raster_size
from ..geo.tiles import OrthoConfig, folder_tiles, orthophoto_tiles, view_georeference, world_orthophoto, world_tiles
from .common import add_device, add_image_size, add_model, require_weights, resolve_device, warn_image_size


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def add_sources(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("tile source (one of)")
    src.add_argument("--tiles", help="(a) folder of tile images, with --csv")
    src.add_argument("--csv", help="(a) CSV: id, latitude, longitude, footprint_m [, image]")
    src.add_argument("--footprint-m", type=float, help="(a) tile side in metres when the CSV has no footprint_m")
    src.add_argument("--ortho", help="(b) orthophoto: a GeoTIFF, or an image with a world file "
                     "(.jgw/.pgw/.tfw/.wld) beside it (beside a GeoTIFF it must agree with the tags)")  # fmt: skip
    src.add_argument("--world-file", help="(b) world file, when not next to the image (over a GeoTIFF's own "
                     "transform, with a warning)")  # fmt: skip
    src.add_argument("--crs", help="(b) coordinate system: EPSG:4326, EPSG:3857, UTM:33N; with rasterio any EPSG code, "
                     "WKT or PROJ string (default: the GeoTIFF's own, which --crs overrides with a warning, else "
                     "EPSG:4326)")  # fmt: skip
    src.add_argument("--tile-m", type=float, help="(b) tile ground side in metres")
    src.add_argument("--stride-m", type=float, help="(b) stride between tiles in metres (default: half a tile)")
    src.add_argument("--scales", default="1", help="(b) comma-separated tile-size factors, e.g. 1,1.5,2")
    src.add_argument("--rotations", default="0", help="(b) comma-separated rotations, e.g. 0,90,180,270")
    src.add_argument("--world", help="(c) synthetic world folder (its test gallery: test + distractor tiles)")
    src.add_argument("--dsm", metavar="DSM.tif",
                     help="(b, c) surface heights of the orthophoto's ground in metres (a GeoTIFF in any CRS, nodata "
                          "kept): registration lifts matches to 3D and solves a full 6-DoF camera, heights above "
                          "the DSM's datum (a synthetic world with --relief-m writes dsm.tif)")  # fmt: skip
    src.add_argument("--dsm-units", choices=("m", "ft"),
                     help="what the DSM's heights are in, when its CRS is feet-based (default: metres)")
    src.add_argument("--split", default="test", choices=("test", "train"), help="(c) which gallery of the world")


def tiles_from_args(args: argparse.Namespace):
    chosen = [name for name in ("tiles", "ortho", "world") if getattr(args, name)]
    if len(chosen) != 1:
        raise ValueError("give exactly one tile source: --tiles DIR --csv FILE, --ortho IMAGE, or --world DIR")
    if args.tiles:
        if not args.csv:
            raise ValueError("--tiles needs --csv with the tile coordinates")
        return folder_tiles(args.tiles, args.csv, args.footprint_m)
    if args.ortho:
        if args.tile_m is None:
            raise ValueError("--ortho needs --tile-m (tile ground side in metres)")
        cfg = OrthoConfig(
            args.tile_m, args.tile_m / 2 if args.stride_m is None else args.stride_m, tuple(_floats(args.scales)),
            tuple(int(r) for r in _floats(args.rotations)), args.crs,
        )  # fmt: skip
        return orthophoto_tiles(args.ortho, cfg, args.world_file)
    return world_tiles(args.world, args.split)


def terrain_from_args(args: argparse.Namespace) -> list:
    """The --dsm resampled onto the orthophoto of source (b) or (c) (empty without --dsm)."""
    if not getattr(args, "dsm", None):
        if getattr(args, "dsm_units", None):
            raise ValueError("--dsm-units describes a --dsm; pass --dsm DSM.tif too")
        return []
    if args.ortho:
        image = Path(args.ortho)
        world, crs, _ = view_georeference(image, args.crs, args.world_file)  # a south-up one as its tiles see it
    elif args.world:
        found = world_orthophoto(Path(args.world))
        if found is None:
            raise ValueError(f"--dsm needs the world's orthophoto, and {args.world} wrote none (world.json)")
        image, world, crs = found
    else:
        raise ValueError("--dsm needs an orthophoto source (--ortho or --world): tile folders have no pixel grid "
                         "to put heights on")  # fmt: skip
    return [terrain.resample_dsm(args.dsm, image, world, crs, raster_size(image), args.dsm_units)]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, extend and inspect a geo-referenced gallery index")
    cmds = p.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")

    b = cmds.add_parser("build", help="encode a tile source into a new index folder")
    b.add_argument("--out", required=True, help="index folder to create (refused while another process writes "
                   "it or a folder around it, such as a running adapt)")
    add_model(b, onnx=True)
    add_image_size(b)
    add_device(b)
    add_sources(b)
    b.add_argument("--index-type", default="auto", choices=("auto", "flat", "ivf", "hnsw"),
                   help="faiss index; auto = exact up to --exact-max tiles, IVF above")  # fmt: skip
    b.add_argument("--exact-max", type=int, default=IndexConfig.exact_max)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--overwrite", action="store_true", help="replace an existing index in --out")
    b.add_argument("--no-reference-features", action="store_true",
                   help="do not store the features (XFeat and SIFT) of the registration windows (about 1.4 MB a "
                        "tile); `localize` then registers with SIFT alone, which fails across dates and sensors, "
                        "and describes each candidate's window per photo")  # fmt: skip
    b.set_defaults(func=run_build)

    a = cmds.add_parser("add", help="encode more tiles into an existing index (same model)")
    a.add_argument("index", help="index folder")
    add_model(a, onnx=True, index=True)
    add_device(a)
    add_sources(a)
    a.add_argument("--batch-size", type=int, default=32)
    a.set_defaults(func=run_add)

    i = cmds.add_parser("info", help="size, model, index kind and extent of an index")
    i.add_argument("index", help="index folder")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=run_info)


def run_build(args: argparse.Namespace) -> int:
    require_weights(args)
    grids = terrain_from_args(args)  # a bad DSM is refused before minutes of encoding
    tiles = tiles_from_args(args)
    encoder = open_encoder(args.checkpoint, args.variant, args.image_size, args.onnx, resolve_device(args.device),
                           args.init)  # fmt: skip
    if args.image_size is not None:
        warn_image_size(args.image_size, getattr(getattr(encoder, "model", None), "image_size", None))
    config = IndexConfig(kind=args.index_type, exact_max=args.exact_max)
    with folder_lock(args.out, "index build"):  # two builds (or a build into a running adapt's index) never mix
        index = GalleryIndex.create(args.out, encoder.identity, config, args.overwrite)
        index.add(tiles, encode_tiles(encoder, tiles, args.batch_size))
        if not args.no_reference_features:
            reference_features.store(index, tiles)
        index.save()
        terrain.store(index.folder, grids)  # without --dsm: no terrain, whatever an overwritten index held
    stored = len(index.reference_features()) if index.reference_settings else 0
    print(f"built {args.out}: {len(index)} tiles, {index.index_params['kind']} index, "
          f"{encoder.identity.variant} {encoder.identity.dim}-d at {encoder.identity.image_size} px, "
          f"reference features (learned and SIFT) for {stored} tiles"
          + "".join(f"; terrain from {Path(g.source).name} ({100 * np.isfinite(g.heights).mean():.0f} % of the "
                    f"orthophoto covered, heights {np.nanmin(g.heights):.1f}..{np.nanmax(g.heights):.1f} m)"
                    for g in grids))  # fmt: skip
    return 0


def run_add(args: argparse.Namespace) -> int:
    grids = terrain_from_args(args)
    tiles = tiles_from_args(args)
    encoder = index_encoder(GalleryIndex.load(args.index), args.checkpoint, args.variant, args.onnx,
                            resolve_device(args.device), args.init, args.random_init)  # fmt: skip
    with folder_lock(args.index, "index add", "index folder"):  # read and written by this process alone
        index = GalleryIndex.load(args.index, expect=encoder.identity)
        before = len(index)
        index.add(tiles, encode_tiles(encoder, tiles, args.batch_size))
        if index.feature_settings:  # as the index's tiles have them (an index built before has none, or learned ones)
            reference_features.store(index, tiles, list(index.feature_settings))
        index.save()
        if grids:  # the new orthophoto's heights join (or replace) those stored for others
            terrain.store(index.folder, [*(g for g in terrain.load(index.folder).values()
                                           if g.image not in {n.image for n in grids}), *grids])  # fmt: skip
    print(f"added {len(index) - before} tiles to {args.index}: {len(index)} in all, {index.index_params['kind']} index")
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = GalleryIndex.load(args.index).info()
    info["terrain"] = terrain.record(args.index)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    m = info["model"]
    print(f"gallery index {info['folder']} (generation {info['generation']})")
    print(f"  tiles       {info['count']} from {', '.join(info['sources'])}")
    print(f"  model       {m['variant']}, {m['dim']}-d, {m['image_size']} px, weights {m['checkpoint_sha256']}"
          + (f" ({m['weights']})" if m.get("weights") else ""))  # fmt: skip
    params = {k: v for k, v in info["index"].items() if k != "calibration"}
    print(f"  faiss       {json.dumps(params)}")
    ref = info["with_reference"]
    print(f"  reference   {ref} of {info['count']} tiles have imagery for registration"
          + ("" if ref else " (built before registration: rebuild for camera positions)"))  # fmt: skip
    rf, inv = info.get("reference_features"), info.get("invariant_features")
    print(f"  features    {rf['tiles']} tiles with stored {rf['matcher']} features for registration" if rf else
          "  features    no stored learned features (localize registers with SIFT alone: rebuild for learned "
          "ones)")  # fmt: skip
    print(f"              {inv['tiles']} tiles with stored {inv['matcher']} features" if inv else
          "              no stored SIFT features (each photo describes its candidates' windows: rebuild to store "
          "them)")  # fmt: skip
    dsm = "; ".join(f"{Path(g['source']).name} under {Path(g['image']).name} ({100 * g['valid_share']:.0f} % covered, "
                    f"heights {g['height_range_m'][0]:.1f}..{g['height_range_m'][1]:.1f} m)"
                    for g in (info["terrain"] or {}).get("grids", []))  # fmt: skip
    print(f"  terrain     {dsm or 'none (flat ground assumed; index build --dsm for a 6-DoF camera over relief)'}")
    if "extent" in info:
        e = info["extent"]
        print(f"  extent      lat {e['lat_min']:.6f}..{e['lat_max']:.6f}, lon {e['lon_min']:.6f}..{e['lon_max']:.6f}")
    return 0
