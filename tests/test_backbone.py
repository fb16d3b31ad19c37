from pathlib import Path

import pytest
import torch

from spikevimformer import build_model
from spikevimformer.analysis.complexity import count_macs, total_macs
from spikevimformer.models import NILIF, count_parameters
from spikevimformer.models.backbone import SpikeAttention

DATA = Path(__file__).parent / "data"
TSV = {"tiny": DATA / "e-spikeformer-10M-state-dict.tsv", "small": DATA / "e-spikeformer-19M-state-dict.tsv"}


def spec_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official checkpoint's backbone, read from the spec's TSV (head dropped)."""
    rows = [line.rstrip("\n").split("\t") for line in TSV[variant].read_text().splitlines()[1:]]
    return {
        key: tuple(int(v) for v in shape.strip("[]").split(",") if v.strip())
        for key, shape, _ in rows
        if not key.startswith("head.")
    }


@pytest.mark.parametrize("variant,params", [("tiny", 9_782_112), ("small", 18_626_504)])
def test_parameter_counts(variant, params):
    assert count_parameters(build_model(variant).backbone) == params


@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_state_dict_matches_official_keys_and_shapes(variant):
    got = {k: tuple(v.shape) for k, v in build_model(variant).backbone.state_dict().items()}
    assert got == spec_shapes(variant)
    assert len(got) == 603


@pytest.mark.parametrize("variant,dim", [("tiny", 240), ("small", 360)])
def test_output_shapes_64(variant, dim):
    backbone = build_model(variant).backbone.eval()
    with torch.no_grad():
        fmap = backbone(torch.randn(2, 3, 64, 96))
    assert fmap.shape == (2, dim, 4, 6)


@pytest.mark.slow
def test_output_shape_384_tiny():
    model = build_model("tiny").eval()
    with torch.no_grad():
        fmap = model.backbone(torch.randn(1, 3, 384, 384))
    assert fmap.shape == (1, 240, 24, 24)


def test_rejects_sides_not_multiple_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model("tiny").backbone(torch.randn(1, 3, 72, 64))


def test_attention_q_ktv_equals_qkt_v_on_random_spikes():
    heads, d, dv, n = 8, 24, 96, 576
    q = torch.randint(0, 5, (2, heads, n, d)).float() / 4
    k = torch.randint(0, 5, (2, heads, n, d)).float() / 4
    v = torch.randint(0, 5, (2, heads, n, dv)).float() / 4
    torch.testing.assert_close(q @ (k.transpose(-2, -1) @ v), (q @ k.transpose(-2, -1)) @ v, rtol=1e-6, atol=1e-4)


def test_attention_module_matches_reference_formula():
    """The module's channel-major Q (K^T V) equals the token-major (Q K^T) V of the E-SpikeFormer code."""
    attn = SpikeAttention(32, 8, NILIF).eval()
    for m in attn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 32, 6, 6) * 2
    b, c, h, w = x.shape
    with torch.no_grad():
        out = attn(x)
        z = attn.head_lif(x)

        def heads_of(t: torch.Tensor) -> torch.Tensor:  # (B, C', H, W) -> (B, heads, N, C'/heads)
            return t.flatten(2).transpose(1, 2).reshape(b, h * w, 8, -1).permute(0, 2, 1, 3)

        q, k, v = (heads_of(lif(conv(z))) for lif, conv in
                   ((attn.q_lif, attn.q_conv), (attn.k_lif, attn.k_conv), (attn.v_lif, attn.v_conv)))
        ref = ((q @ k.transpose(-2, -1)) @ v) * (2 / (c // 8) ** 0.5)
        ref = ref.transpose(2, 3).reshape(b, -1, h * w).reshape(b, -1, h, w)
        expected = attn.proj_conv(attn.attn_lif(ref))
    torch.testing.assert_close(out, expected)


def test_mac_counts_match_spec_reference_at_384():
    tiny = build_model("tiny").backbone
    macs, stem = total_macs(count_macs(tiny, (384, 384), "(qkt)v"))
    assert round(macs / 1e9, 2) == 14.27 and round(stem / 1e9, 3) == 0.130
    small = build_model("small").backbone
    macs_s, stem_s = total_macs(count_macs(small, (384, 384), "(qkt)v"))
    assert round(macs_s / 1e9, 2) == 24.90 and round(stem_s / 1e9, 3) == 0.173
    linear, _ = total_macs(count_macs(small, (384, 384), "q(ktv)"))
    assert 3.2e9 < macs_s - linear < 3.6e9  # "about 3.4 G smaller for small"
