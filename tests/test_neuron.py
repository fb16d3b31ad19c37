import pytest
import torch

from spikevimformer.models import NILIF, record_spikes

GRID = [-1.0, -0.2, 0.0, 0.3, 0.5, 0.51, 1.4, 1.5, 2.5, 3.49, 3.5, 4.0, 4.7, 9.0]


def test_t1_values_are_round_clip_over_d():
    # Hand-computed: round half to even, clip to 0..4, divide by 4.
    expected = [0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 4, 4]
    x = torch.tensor(GRID)
    assert NILIF()(x).tolist() == [e / 4 for e in expected]
    neuron = NILIF().train()
    assert neuron(x.clone().requires_grad_()).detach().tolist() == [e / 4 for e in expected]


def test_t4_leak_half_values():
    # x = 1.4, beta 0.5: U = 1.4 -> s 1, H 0.2; U 1.6 -> s 2, H -0.2; U 1.2 -> s 1, H 0.1; U 1.5 -> s 2.
    # mean over 4 steps of s/4 = (1 + 2 + 1 + 2) / 16 = 0.375.
    # x = 0.3: U 0.3 -> 0, H 0.15; U 0.45 -> 0, H 0.225; U 0.525 -> 1, H -0.2375; U 0.0625 -> 0 => 1/16.
    # x = 5: every step fires 4, H = 0.5 * (5 + H - 4): 0.5, 0.75, 0.875 -> mean 1.0.
    neuron = NILIF(levels=4, time_steps=4, leak=0.5)
    out = neuron(torch.tensor([1.4, 0.3, 5.0, -2.0]))
    assert out.tolist() == pytest.approx([0.375, 0.0625, 1.0, 0.0])


def test_t1_differs_from_t4_on_the_spec_example():
    x = torch.tensor([1.4])
    assert NILIF()(x).item() == 0.25
    assert NILIF(time_steps=4, leak=0.5)(x).item() == 0.375


@pytest.mark.parametrize("time_steps", [1, 4])
def test_gradient_is_straight_through_mask(time_steps):
    x = torch.tensor(GRID, requires_grad=True)
    neuron = NILIF(levels=4, time_steps=time_steps).train()
    neuron(x).sum().backward()
    inside = torch.tensor([0.0 <= v <= 4.0 for v in GRID], dtype=torch.float32)
    if time_steps == 1:
        assert torch.equal(x.grad, inside / 4)
    else:
        # Each step passes 1/(D*T) where its membrane is inside the window; outside inputs get nothing.
        assert torch.all(x.grad[inside == 0] == 0)
        assert torch.all(x.grad[(inside == 1) & (torch.tensor(GRID) > 0.5)] > 0)


def test_eval_path_equals_train_path():
    x = torch.randn(1000) * 3
    train_out = NILIF().train()(x.clone().requires_grad_()).detach()
    eval_out = NILIF().eval()(x)
    assert torch.equal(train_out, eval_out)
    assert torch.all((eval_out * 4) == (eval_out * 4).round())


def test_statistics_off_by_default_and_exact_when_on():
    model = torch.nn.Sequential(NILIF(), torch.nn.Identity(), NILIF(levels=2))
    assert all(not m._forward_hooks for m in model.modules())
    x = torch.tensor([[0.4, 0.6, 1.4, 3.0, 7.0]])
    with record_spikes(model, histogram=True) as rec:
        model(x)
        model(x)
    assert all(not m._forward_hooks for m in model.modules())
    first = rec.as_dict()["0"]
    # counts of the first neuron: 0, 1, 1, 3, 4 -> 9 per call
    assert first["elements"] == 10 and first["spikes"] == 18.0
    assert first["rate"] == pytest.approx(1.8)
    assert first["histogram"] == [2, 4, 0, 2, 2]
    second = rec.as_dict()["2"]
    # second neuron (D = 2) sees 0, .25, .25, .75, 1 -> counts 0, 0, 0, 1, 1 -> 2 per call
    assert second["spikes"] == 4.0 and second["histogram"] == [6, 4, 0]


def test_invalid_settings_rejected():
    with pytest.raises(ValueError, match="levels"):
        NILIF(levels=0)
