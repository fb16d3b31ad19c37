from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from spikevimformer.checkpoint import load_model
from spikevimformer.cli import main
from spikevimformer.export import InferenceModel, export_onnx, onnx_parity
from spikevimformer.geo.encoders import OnnxEncoder
from spikevimformer.models import NILIF, record_spikes
from spikevimformer.models.fuse import fuse_backbone


@pytest.fixture(scope="module")
def model():
    """A BN-calibrated random init with non-trivial BN affine terms, so folding has something to fold."""
    m, _ = load_model(None, "tiny")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for mod in m.backbone.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.weight.mul_(1 + 0.2 * torch.rand(mod.num_features, generator=gen))
                mod.bias.add_(0.1 * torch.randn(mod.num_features, generator=gen))
    return m.eval()


def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def _spikes(backbone: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o.detach())) for m in backbone.modules()
             if isinstance(m, NILIF)]  # fmt: skip
    with torch.no_grad():
        backbone(images)
    for h in hooks:
        h.remove()
    return outs


def test_fuse_removes_every_batchnorm_and_keeps_descriptors(model) -> None:
    fused = fuse_backbone(model.backbone)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.backbone.modules())  # original intact
    x = _images()
    with torch.no_grad():
        ref, got = model.encode(x), InferenceModel(model.backbone)(x)
    assert (ref @ ref.T).min() < 0.99  # descriptors differ between images: the comparison means something
    assert torch.nn.functional.cosine_similarity(ref, got).min() >= 0.999
    a, b = _spikes(model.backbone, x), _spikes(fused, x)
    assert len(a) == len(b) > 50
    same = sum(int((p == q).sum()) for p, q in zip(a, b, strict=True)) / sum(p.numel() for p in a)
    assert same >= 0.99  # NI-LIF rounding may flip the odd value sitting on a .5 boundary
    with record_spikes(fused) as rec:
        with torch.no_grad():
            fused(x)
    assert sum(s.elements for s in rec.stats.values()) > 0


def test_fuse_refuses_a_lonely_batchnorm() -> None:
    with pytest.raises(ValueError, match="no preceding conv"):
        fuse_backbone(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)))


def test_onnx_export_parity_and_metadata(model, tmp_path) -> None:
    path = export_onnx(model, tmp_path / "m.onnx", 32, "random-init:seed=0+bn-calibrated")
    proto = onnx.load(str(path))
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    meta = json.loads(next(p.value for p in proto.metadata_props if p.key == "spikevimformer"))
    assert meta["image_size"] == 32 and meta["descriptor_dim"] == 240 and meta["variant"] == "tiny"
    x = _images(5)
    mean, low = onnx_parity(model, path, x)
    assert low >= 0.9999 and mean >= low
    enc = OnnxEncoder(path)
    single = enc.encode(x[:1].numpy())  # dynamic batch axis: 1 and 5 both run
    np.testing.assert_allclose(single[0], enc.encode(x.numpy())[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(enc.encode(x.numpy()), axis=1), 1.0, atol=1e-5)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_export_cli_and_errors(tmp_path, capsys) -> None:
    assert main(["export", "--random-init", "--variant", "tiny", "--image-size", "32", "--out",
                 str(tmp_path / "t.onnx")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "parity with PyTorch on 8 rendered drone views and tiles: mean cosine" in out
    assert f"wrote {tmp_path / 't.onnx'}" in out
    assert OnnxEncoder(tmp_path / "t.onnx").identity.checkpoint_sha256.startswith("random-init")
    with pytest.raises(SystemExit) as info:  # refused by the argument parser, before any work
        main(["export", "--random-init", "--variant", "tiny", "--image-size", "30", "--out", str(tmp_path / "x.onnx")])
    assert info.value.code == 2 and "multiple of 16" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxEncoder(tmp_path / "junk.onnx")


@pytest.mark.parametrize("size", [64, 384])
def test_export_agrees_with_pytorch_on_real_images(size, tmp_path) -> None:
    """The shipped model, rendered drone views and tiles: what a user's export is checked against."""
    from spikevimformer import load_pretrained
    from spikevimformer.cli.export import PARITY_MEAN, PARITY_MIN
    from spikevimformer.export import parity_images

    model = load_pretrained()
    path = export_onnx(model, tmp_path / "m.onnx", size, "pretrained")
    mean, low = onnx_parity(model, path, parity_images(size, count=4))
    assert mean >= PARITY_MEAN and low >= PARITY_MIN, (mean, low)


def test_a_failed_export_leaves_nothing_and_a_folder_of_images_is_used(tmp_path, capsys, monkeypatch) -> None:
    from PIL import Image

    import spikevimformer.cli.export as cli_export

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 60), (40 * i, 90, 160)).save(photos / f"{i}.jpg")
    argv = ["export", "--random-init", "--image-size", "32", "--check-images", str(photos)]
    assert main([*argv, "--out", str(tmp_path / "ok.onnx")]) == 0
    assert "on 3 images from" in capsys.readouterr().out
    monkeypatch.setattr(cli_export, "onnx_parity", lambda *a: (0.99, 0.5))
    assert main([*argv, "--out", str(tmp_path / "bad.onnx")]) == 2
    assert "nothing written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.onnx", "photos"]  # no file, no temporary
    assert oct((tmp_path / "ok.onnx").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert main(["export", "--random-init", "--check-images", str(tmp_path / "nope"), "--out", "x.onnx"]) == 2


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_missing_onnx_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError("no onnxruntime", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    assert main(["export", "--random-init", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "onnxruntime is missing" in err and "spikevimformer[deploy]" in err


def test_int8_export_writes_only_what_passes_its_checks(tmp_path, capsys, monkeypatch) -> None:
    """A random 32 px model is chaotic at its thresholds (1e-4 of input noise moves its descriptors as much), so
    its int8 model is refused (fp32 kept, no int8 file); with the bars lowered the same run writes an int8 model
    that loads like the fp32 one."""
    import spikevimformer.cli.export as cli_export
    import spikevimformer.export as export_module

    monkeypatch.setattr(export_module, "CHECK_LOCATIONS", 12)
    monkeypatch.setattr(export_module, "CHECK_VIEWS", 2)
    argv = ["export", "--random-init", "--variant", "tiny", "--image-size", "32", "--int8", "--no-progress"]
    code = main([*argv, "--out", str(tmp_path / "a.onnx")])
    out, err = capsys.readouterr()
    assert "int8: 104 NI-LIF as uint8 counts, 60 QLinearConv, 28 integer 1x1 MatMul" in out
    assert "drone->satellite R@1 on the rendered world: fp32" in out
    assert code == 2 and "a.int8.onnx not written" in err and "under 1e-4 of input noise" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]
    monkeypatch.setattr(cli_export, "INT8_MEAN", -1.0)
    monkeypatch.setattr(cli_export, "INT8_MIN", -1.0)
    monkeypatch.setattr(cli_export, "INT8_RECALL_POINTS", 100.0)
    assert main([*argv, "--out", str(tmp_path / "b.onnx")]) == 0
    int8, fp32 = OnnxEncoder(tmp_path / "b.int8.onnx"), OnnxEncoder(tmp_path / "b.onnx")
    assert int8.metadata["quantization"] == "spike-int8" and int8.identity.mismatch(fp32.identity) is None
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    assert int8.encode(x).shape == (3, 240)
    assert main([*argv, "--check-images", "0", "--out", str(tmp_path / "c.onnx")]) == 2
    assert "drop --check-images 0" in capsys.readouterr().err
    assert not (tmp_path / "c.onnx").exists()
