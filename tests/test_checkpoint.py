import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from spikevimformer import CheckpointError, build_model, load_backbone_checkpoint, load_checkpoint, save_checkpoint
from spikevimformer.checkpoint import load_model, model_from_checkpoint, read_init
from tests.test_backbone import spec_shapes


def official_state(variant: str) -> dict[str, torch.Tensor]:
    """A stand-in for V3_*M_1x4.pth: every spec key with random values, plus the ImageNet head."""
    g = torch.Generator().manual_seed(1)
    state = {
        k: torch.randn(shape, generator=g) if shape else torch.tensor(7) for k, shape in spec_shapes(variant).items()
    }
    dim = 240 if variant == "tiny" else 360
    state["head.weight"] = torch.randn(1000, dim, generator=g)
    state["head.bias"] = torch.zeros(1000)
    return state


WRAPPINGS = {
    "plain": lambda s: s,
    "model": lambda s: {"model": s, "epoch": 300},
    "state_dict": lambda s: {"state_dict": s, "args": {"lr": 1e-3}},
    "module_prefix": lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
    "compiled_ddp_prefix": lambda s: {"state_dict": {f"_orig_mod.module.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_official_checkpoint_loads_in_every_wrapping(tmp_path, variant, wrapping):
    state = official_state(variant)
    path = tmp_path / "ckpt_named_misleadingly_19M.pth"
    torch.save(WRAPPINGS[wrapping](state), path)
    model = build_model(variant, num_classes=3)
    assert load_backbone_checkpoint(model, path) == variant
    loaded = model.backbone.state_dict()
    key = "block4.1.attn.v_conv.0.weight"
    assert torch.equal(loaded[key], state[key])
    assert int(loaded["downsample1_1.encode_bn.num_batches_tracked"]) == 7


def test_tiny_checkpoint_offered_to_small_is_refused(tmp_path):
    path = tmp_path / "V3_10.0M_1x4.pth"
    torch.save({"model": official_state("tiny")}, path)
    with pytest.raises(CheckpointError, match=r"holds the E-SpikeFormer tiny backbone.*build_model\('tiny'\)"):
        load_backbone_checkpoint(build_model("small"), path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "V3_10.0M_1x4.pth"
    torch.save({"model": official_state("tiny")}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint: it is truncated") as err:
        load_backbone_checkpoint(build_model("tiny"), path)
    assert str(err.value).endswith("so fetch it again")  # a whole sentence, not torch's text cut off
    torch.save({"model": official_state("tiny")}, path, _use_new_zipfile_serialization=False)  # the pre-1.6 format
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(CheckpointError, match="it is truncated \\(the file ends early\\)"):
        load_backbone_checkpoint(build_model("tiny"), path)


def test_pickled_python_objects_are_named_not_run(tmp_path):
    path = tmp_path / "with-args.pt"
    torch.save({"model": official_state("tiny"), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"holds a Python object \(argparse.Namespace\).*state_dict alone"):
        load_backbone_checkpoint(build_model("tiny"), path)


def test_non_checkpoint_files_are_refused(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_backbone_checkpoint(build_model("tiny"), text)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(CheckpointError, match="not an E-SpikeFormer tiny .* 603 missing keys"):
        load_backbone_checkpoint(build_model("tiny"), other)
    torch.save({"weights": {"fc.weight": torch.zeros(3, 3)}, "epoch": 3}, other)
    with pytest.raises(CheckpointError, match="holds no state dict of tensors"):
        load_backbone_checkpoint(build_model("tiny"), other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone_checkpoint(build_model("tiny"), tmp_path / "missing.pth")


def test_arbitrary_pickles_are_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError):
        load_backbone_checkpoint(build_model("tiny"), path)


def test_partial_state_dict_is_refused_strictly(tmp_path):
    state = official_state("tiny")
    del state["block3.2.mlp.fc1_conv.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="1 missing keys"):
        load_backbone_checkpoint(build_model("tiny"), path)


def test_own_checkpoint_round_trip_is_atomic_and_strict(tmp_path):
    model = build_model("tiny", num_classes=6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, 3, 32, 32)).descriptor.sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "run" / "last.pt", model, optimizer=opt, config={"lr": 1e-4}, metrics={"R@1": 12.5}
    )
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind
    payload = load_checkpoint(path)
    assert payload["config"] == {"lr": 1e-4} and payload["metrics"]["R@1"] == 12.5
    assert "state" in payload["optimizer"]
    rng = torch.get_rng_state()
    restored = model_from_checkpoint(path).eval()
    assert torch.equal(torch.get_rng_state(), rng)  # rebuilt on the meta device: no random init spent
    assert all(t.device.type == "cpu" and t.dtype == model.state_dict()[k].dtype
               for k, t in restored.state_dict().items())
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))
    with pytest.raises(CheckpointError, match="not a spikevimformer checkpoint"):
        official = tmp_path / "official.pth"
        torch.save(official_state("tiny"), official)
        load_checkpoint(official)


def test_numpy_and_path_values_are_written_plain_and_load_safely(tmp_path):
    """What training code hands over (numpy scalars from metrics, arrays, paths, tuples) reads back with
    weights_only as Python values; anything else is refused at write time, naming its key, leaving no file."""
    model = build_model("tiny", num_classes=2)
    metrics = {"R@1": np.float32(0.5), "rows": [{"queries": np.int64(3), "hit": np.bool_(True)}],
               "ranks": np.arange(3), "data": Path("/data/world"), "size": (np.int64(64), 64)}
    path = save_checkpoint(tmp_path / "best.pt", model, config={"lr": np.float64(1e-4)}, metrics=metrics)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["metrics"] == {"R@1": 0.5, "rows": [{"queries": 3, "hit": True}], "ranks": [0, 1, 2],
                                  "data": "/data/world", "size": (64, 64)}
    assert type(payload["metrics"]["R@1"]) is float and type(payload["metrics"]["rows"][0]["queries"]) is int
    assert type(payload["config"]["lr"]) is float
    with pytest.raises(TypeError, match=r"metrics\['bad'\] holds a builtins.object"):
        save_checkpoint(tmp_path / "refused.pt", model, metrics={"bad": object()})
    assert not (tmp_path / "refused.pt").exists()


def test_wrapped_model_checkpoints_load_like_the_plain_one(tmp_path):
    """DataParallel/DDP (`module.`) and torch.compile (`_orig_mod.`) key prefixes, alone or both, load in the
    one shared loader, as a bare state_dict or one of our checkpoints, and give the plain model's outputs."""
    model = build_model("tiny", num_classes=3).eval()
    state = model.state_dict()
    ours = save_checkpoint(tmp_path / "ours.pt", model)
    payload = torch.load(ours, map_location="cpu", weights_only=True)
    payload["model"] = {f"_orig_mod.module.{k}": v for k, v in state.items()}
    torch.save(payload, ours)
    files = [ours]
    for prefix in ("module.", "_orig_mod."):
        files.append(tmp_path / f"{prefix}pt")
        torch.save({prefix + k: v for k, v in state.items()}, files[-1])
    loaded = [load_model(path)[0] for path in files]
    for other in (m.state_dict() for m in loaded):
        assert other.keys() == state.keys() and all(torch.equal(other[k], v) for k, v in state.items())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded[0](x), model(x), rtol=0, atol=0)
    assert read_init(ours)[1].keys() == state.keys()


def test_a_wrapped_model_is_saved_as_the_model_inside(tmp_path):
    model = build_model("tiny", num_classes=2)
    path = save_checkpoint(tmp_path / "last.pt", torch.nn.DataParallel(model))
    assert load_checkpoint(path)["model"].keys() == model.state_dict().keys()
