"""One way to pick a model: the loader's three paths, its refusals, BN calibration, and the CLI flags."""

from __future__ import annotations

import argparse
import hashlib

import pytest
import torch
from torch import nn

from spikevimformer import build_model, save_checkpoint
from spikevimformer.checkpoint import CheckpointError, _random_init_state, load_model, save_release
from spikevimformer.cli import build_parser, main
from spikevimformer.geo.encoders import encode_tiles, open_encoder
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import open_localizer
from spikevimformer.geo.tiles import world_tiles
from spikevimformer.models import calibrate_batchnorm
from tests.geo_world import make_world
from tests.test_checkpoint import official_state

# Leaf commands that run a model, with the arguments each needs besides the model flags.
MODEL_COMMANDS = {
    ("evaluate",): ["--data-root", "d"],
    ("robustness",): ["--data-root", "d"],
    ("visualize", "strips"): ["--data-root", "d", "--out", "s.png"],
    ("visualize", "heatmap"): ["img.png", "--out", "hm"],
    ("energy",): ["--out", "e"],
    ("index", "build"): ["--out", "idx", "--world", "w"],
    ("index", "add"): ["idx", "--world", "w"],
    ("localize",): ["q.png", "--index", "idx"],
    ("flight",): ["frames", "--index", "idx"],
    ("serve",): ["--index", "idx"],
    ("export",): ["--out", "m.onnx"],
}
WITH_ONNX = {("index", "build"), ("index", "add"), ("localize",), ("flight",), ("serve",)}
MODEL_FLAGS = {"--checkpoint", "--variant", "--init"}


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_model_command_takes_the_same_model_flags() -> None:
    parser = build_parser()
    for cmd, extra in MODEL_COMMANDS.items():
        args = parser.parse_args([*cmd, *extra, "--checkpoint", "c.pt", "--variant", "small", "--init", "i.pth"])
        assert (args.checkpoint, args.variant, args.init) == ("c.pt", "small", "i.pth"), cmd
        defaults = parser.parse_args([*cmd, *extra])
        assert (defaults.checkpoint, defaults.variant, defaults.init) == (None, None, None), cmd
        assert hasattr(defaults, "onnx") == (cmd in WITH_ONNX), cmd
        with pytest.raises(SystemExit):  # one spelling of the variant names everywhere
            parser.parse_args([*cmd, *extra, "--variant", "huge"])
    # No command grows a model flag without the others (train and adapt take their starting weights as --init).
    having = {}
    for path, leaf in _leaf_parsers(parser):
        flags = {s for a in leaf._actions for s in a.option_strings} & MODEL_FLAGS
        if flags and path not in {("train",), ("adapt",)}:
            having[path] = flags
    assert having == {cmd: MODEL_FLAGS for cmd in MODEL_COMMANDS}
    with pytest.raises(SystemExit):  # energy's old spelling of --init is gone
        parser.parse_args(["energy", "--out", "e", "--backbone-weights", "w.pth"])


def test_random_init_is_seeded_calibrated_and_tagged() -> None:
    model, tag = load_model()
    assert tag == "random-init:seed=0+bn-calibrated" and model.variant == "tiny" and not model.training
    _random_init_state.cache_clear()  # recompute: the same seed must give the same weights (index identity)
    torch.manual_seed(123)  # and the global RNG must not matter
    again, _ = load_model(variant="tiny")
    pairs = zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # calibrated, not fresh
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        desc = model(x)
    assert (desc @ desc.T).fill_diagonal_(0).abs().max() < 0.999  # images do not all collapse to one descriptor


def test_imagenet_init_takes_its_variant_from_the_file(tmp_path) -> None:
    state = official_state("tiny")
    path = tmp_path / "V3_10.0M_1x4.pth"
    torch.save({"model": state}, path)
    model, tag = load_model(init=path)
    assert model.variant == "tiny" and tag == "imagenet-init:sha256=" + _sha256(path)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head."))
    assert load_model(variant="tiny", init=path)[1] == tag
    with pytest.raises(CheckpointError, match="use build_model\\('tiny'\\)"):
        load_model(variant="small", init=path)


def test_checkpoint_is_tagged_by_its_sha256(tmp_path) -> None:
    trained = build_model("tiny")
    path = save_checkpoint(tmp_path / "best.pt", trained)
    model, tag = load_model(checkpoint=path)
    assert tag == _sha256(path) and len(tag) == 64 and not model.training
    assert torch.equal(model.backbone.state_dict()["downsample1_1.encode_conv.weight"],
                       trained.backbone.state_dict()["downsample1_1.encode_conv.weight"])  # fmt: skip
    with pytest.raises(ValueError, match="holds the tiny variant, not small"):
        load_model(checkpoint=path, variant="small")
    release = tmp_path / "release.safetensors"  # the shipped fp16 form loads through the same flag
    sha = save_release(trained, release)
    shipped, shipped_tag = load_model(checkpoint=release)
    assert shipped_tag == sha == _sha256(release) and shipped.variant == "tiny" and not shipped.training
    with pytest.raises(ValueError, match="unknown variant"):
        load_model(variant="huge")


def test_checkpoint_and_init_together_are_refused(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="either a spikevimformer checkpoint .* or official E-SpikeFormer .* not both"):
        load_model(checkpoint="a.pt", init="b.pth")  # refused before any file is read
    assert main(["export", "--checkpoint", "a.pt", "--init", "b.pth", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikevimformer export: error: give either") and "--checkpoint" in err and "--init" in err
    assert not (tmp_path / "m.onnx").exists()


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))


def test_calibrate_batchnorm_averages_real_batches_and_restores_state() -> None:
    net = _bn_net().eval()
    batches = [torch.rand(5, 3, 8, 8) * (i + 1) for i in range(3)]
    assert calibrate_batchnorm(net, [(b, torch.zeros(5)) for b in batches]) == 3  # DataLoader-style items too
    conv, bn = net[0], net[1]
    with torch.no_grad():
        means = torch.stack([conv(b).mean(dim=(0, 2, 3)) for b in batches])
    torch.testing.assert_close(bn.running_mean, means.mean(0))  # plain average, not an EMA
    assert not net.training and bn.momentum == 0.1
    net.train()
    calibrate_batchnorm(net, seed=3)
    first = bn.running_mean.clone()
    calibrate_batchnorm(net, seed=3)
    assert net.training and torch.equal(bn.running_mean, first)  # seeded noise: the same every time
    with pytest.raises(ValueError, match="no batches"):
        calibrate_batchnorm(net, [])
    assert torch.equal(bn.running_mean, first)  # a failed calibration leaves the old statistics


def test_index_built_from_imagenet_init_asks_for_it_back(tmp_path) -> None:
    init = tmp_path / "V3_10.0M_1x4.pth"
    state = official_state("tiny")
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}  # usable BN
    torch.save(state, init)
    world = make_world(tmp_path / "world", n_test=3, n_distractor=0, n_train=0)
    encoder = open_encoder(image_size=32, init=str(init))
    tiles = world_tiles(world)
    index = GalleryIndex.create(tmp_path / "idx", encoder.identity)
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    index.save()
    assert open_localizer(str(tmp_path / "idx")).encoder.identity == index.identity  # remembered
    init.rename(tmp_path / "moved.pth")
    with pytest.raises(ValueError, match="which is gone: pass the same weights with --init"):
        open_localizer(str(tmp_path / "idx"))
    (tmp_path / "moved.pth").rename(init)
    with pytest.raises(ValueError, match="built with the tiny variant, not small"):
        open_localizer(str(tmp_path / "idx"), variant="small", init=str(init))
    assert open_localizer(str(tmp_path / "idx"), init=str(init)).encoder.identity == index.identity
