import pytest
import torch

from spikevimformer import ModelOutput, build_model
from spikevimformer.models import count_parameters


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match="tiny"):
        build_model("huge")


def test_training_branch_sizes_tiny():
    model = build_model("tiny", num_classes=701)
    # SSA / SHS sizes of the refactor's structure (spec model.md).
    assert count_parameters(model.ssa) == 817_440
    assert count_parameters(model.shs) == 689_633


def test_eval_returns_only_normalised_descriptor_and_never_runs_branches():
    model = build_model("tiny", num_classes=5).eval()
    calls = []
    for module in (model.ssa, model.shs, model.classifier):
        module.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
        enc = model.encode(torch.randn(3, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 240)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(enc.norm(dim=1), torch.ones(3))
    assert calls == []


def test_encode_is_the_eval_forward_and_flip_is_normalised():
    model = build_model("tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.encode(x))
        flipped = model.encode(x, flip=True)
        expected = torch.nn.functional.normalize(model.encode(x) + model.encode(x.flip(-1)), dim=-1)
    torch.testing.assert_close(flipped, expected)


def test_training_returns_all_outputs_with_gradients_to_backbone():
    model = build_model("tiny", num_classes=4).train()
    calls = []
    for module in (model.ssa, model.shs, model.classifier):
        module.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    out = model(torch.randn(4, 3, 64, 64))
    assert isinstance(out, ModelOutput)
    assert out.descriptor.shape == (4, 240) and out.ssa_descriptor.shape == (4, 240)
    assert out.shs_logits.shape == (4, 4) and out.shs_embedding.shape == (4, 512)
    assert calls == ["SSA", "SHS", "SHSClassifier"]
    for name, term in [("descriptor", out.descriptor), ("ssa", out.ssa_descriptor), ("shs", out.shs_logits)]:
        model.zero_grad()
        (term * torch.randn_like(term)).sum().backward(retain_graph=True)
        grad = model.backbone.downsample1_1.encode_conv.weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_time_steps_override_reaches_every_neuron():
    model = build_model("tiny", time_steps=4, leak=0.5)
    from spikevimformer.models import NILIF

    neurons = [m for m in model.modules() if isinstance(m, NILIF)]
    assert neurons and all(n.time_steps == 4 and n.leak == 0.5 for n in neurons)
