"""Training dynamics and methods: masked decay, flip rate, warm-up lambda rule, dense switch, STEP,
Bi-Mask, S-STE, half, exact controller round trip, and every method training a tiny model."""

import io

import pytest
import torch
import torch.nn.functional as F

import sparse_core
from sparse_core import SparseLinear, is_valid_24
from sparse_core.controller import next_lambda
from sparse_core.methods.base import build_method
from sparse_core.methods.bimask import backward_mask
from sparse_core.methods.s_ste import soft_threshold_24

from tiny_models import TinyGPT, affine_sequence_batch, train_tiny


def one_layer(method, **options):
    model = torch.nn.Module()
    model.mlp = torch.nn.Module()
    model.mlp.fc1 = torch.nn.Linear(8, 8)
    ctl = sparse_core.sparsify(model, method=method, total_steps=100, **options)
    return model.mlp.fc1, ctl


def test_masked_decay_on_gradients():
    layer, ctl = one_layer("2by4", lambda_w=0.5, mvue=False)
    g = torch.randn_like(layer.weight)
    layer.weight.grad = g.clone()
    ctl.before_optimizer_step(0)
    expected = g + 0.5 * (~layer.mask) * layer.weight.detach()
    assert torch.allclose(layer.weight.grad, expected)


def test_masked_decay_on_weights_uses_the_learning_rate():
    layer, ctl = one_layer("sr-ste", lambda_w=0.5)
    opt = torch.optim.SGD([layer.weight, layer.bias], lr=0.1)
    ctl.bind_optimizer(opt)
    w = layer.weight.detach().clone()
    ctl.before_optimizer_step(0)
    assert torch.allclose(layer.weight, w - 0.1 * 0.5 * (~layer.mask) * w)
    layer2, ctl2 = one_layer("sr-ste")
    with pytest.raises(RuntimeError, match="bind_optimizer"):
        ctl2.before_optimizer_step(0)


def test_flip_rate_on_hand_made_masks():
    layer, ctl = one_layer("ste")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0] * 2] * 8))
    ctl.after_optimizer_step(0)  # refresh: mask keeps positions 0,1 of each group
    with torch.no_grad():
        layer.weight[0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # group 0 of row 0 moves to 2,3
        layer.weight[1, 4:] = torch.tensor([4.0, 1.0, 3.0, 2.0])  # group 1 of row 1 moves to 0,2
    ctl.after_optimizer_step(1)
    assert ctl.flip_rate == pytest.approx(6 / 64)  # 4 entries + 2 entries changed
    assert ctl.metrics()["sparse/flip_rate/mlp.fc1"] == pytest.approx(6 / 64)


def test_warmup_lambda_rule_on_a_synthetic_trace():
    lam, settled, trace = 1e-6, False, [0.2, 0.1, 0.05, 0.004, 0.001]
    history = []
    for r in trace:
        if settled:
            break
        lam, settled = next_lambda(lam, r, low=1e-3, high=1e-2, growth=2.0)
        history.append(lam)
    assert history == pytest.approx([2e-6, 4e-6, 8e-6, 8e-6]) and settled
    assert next_lambda(8e-6, 1e-4, low=1e-3, high=1e-2, growth=2.0) == (4e-6, True)


def test_warmup_lambda_rule_lowers_flip_rate_on_a_real_tiny_model():
    common = dict(steps=120, mvue=False, mask_refresh_interval=5, dense_ft_fraction=None)
    _, auto, _ = train_tiny("2by4", lambda_w="auto", warmup_steps=60, lambda_init=1e-3, lambda_growth=4.0,
                            flip_high=1e-3, flip_low=0.0, **common)
    _, zero, _ = train_tiny("2by4", lambda_w=0.0, **common)
    assert auto.lambda_settled and auto.lambda_w > 1e-3
    assert auto.flip_rate < zero.flip_rate
    assert auto.state_dict()["lambda_w"] == auto.lambda_w


def test_dense_switch_at_exactly_the_configured_step():
    layer, ctl = one_layer("2by4", lambda_w=0.1, dense_ft_fraction=0.3)  # total 100 -> step 30
    for step in range(29):
        ctl.after_optimizer_step(step)
    assert layer.mode == "sparse" and not ctl.dense
    ctl.after_optimizer_step(29)
    assert layer.mode == "dense" and ctl.dense and ctl.metrics()["sparse/dense"] == 1.0
    layer.weight.grad = torch.ones_like(layer.weight)
    ctl.before_optimizer_step(30)
    assert torch.equal(layer.weight.grad, torch.ones_like(layer.weight))  # decay stopped
    x = torch.randn(2, 8)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias))  # pruned weights are back


def test_step_switches_inside_bounds_and_freezes_v():
    losses, ctl, model = train_tiny("step", steps=60, min_switch_fraction=0.2, max_switch_fraction=0.5,
                                    switch_tolerance=1e9, check_interval=4)
    method = ctl.method
    assert method.switched_at == 12  # tolerance always met -> the minimum bound
    assert all(layer.mode == "sparse" for layer in ctl.layers.values())
    opt = ctl.optimizer
    for fqn, layer in ctl.layers.items():
        state = opt.state[layer.weight]
        beta2 = opt.param_groups[0]["betas"][1]
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
        assert torch.allclose(v_hat, method.v_frozen[fqn], rtol=1e-4, atol=1e-12)
    _, never, _ = train_tiny("step", steps=40, min_switch_fraction=0.1, max_switch_fraction=0.5,
                             switch_tolerance=0.0)
    assert never.method.switched_at == 20  # never settles -> the maximum bound


def test_bimask_backward_mask():
    layer, ctl = one_layer("bi-mask")
    fwd, bwd = layer.mask, layer.backward_mask
    assert is_valid_24(fwd, dim=1)
    assert torch.equal(bwd & fwd, bwd) and not torch.equal(bwd, fwd)
    perm = ctl.method.perms["mlp.fc1"]
    assert ((bwd[perm].reshape(2, 4, 8).sum(1)) <= 2).all()  # column-wise 2:4 in permuted row order
    assert torch.equal(backward_mask(layer.weight, fwd, perm), bwd)
    x = torch.randn(4, 8, requires_grad=True)
    dy = torch.randn(4, 8)
    layer(x).backward(dy)
    assert torch.allclose(x.grad, dy @ (layer.weight.detach() * bwd))


def test_sste_output_is_24_with_fixed_scale():
    w = torch.tensor([[4.0, -3.0, 1.0, 0.5, 0.0, 2.0, -2.0, 1.0]])
    assert soft_threshold_24(w).tolist() == [[3.0, -2.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0]]
    losses, ctl, model = train_tiny("s-ste", steps=20)
    for layer in ctl.layers.values():
        eff = layer.effective_weight()
        assert ((eff != 0).reshape(-1, 4).sum(-1) <= 2).all()
        s = soft_threshold_24(layer.weight.detach())
        assert torch.allclose(eff, layer.sste_scale * s)
    _, ctl0, _ = train_tiny("s-ste", steps=1)
    first = {k: float(v.sste_scale) for k, v in ctl0.layers.items()}
    assert first == {k: float(v.sste_scale) for k, v in ctl.layers.items()}  # fixed at the start
    with pytest.warns(UserWarning, match="refreshed every 5 steps"):  # a stale mask is not S-STE's function
        build_method("s-ste", mask_refresh_interval=5).validate(100)


def test_half_halves_ffn_width():
    assert sparse_core.ffn_hidden_dim(128, "half") == 64
    _, _, model = train_tiny("half", steps=1)
    assert model.h[0].mlp.c_fc.out_features == 64


def run(method, model, ctl, opt, gen, steps, start):
    for step in range(start, start + steps):
        x, y = affine_sequence_batch(gen)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        ctl.before_optimizer_step(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step)


def build(method, total):
    torch.manual_seed(0)
    model = TinyGPT(hidden=sparse_core.ffn_hidden_dim(128, method))
    ctl = sparse_core.sparsify(model, method=method, total_steps=total, **(
        {"mask_refresh_interval": 3, "warmup_steps": 6} if method == "2by4" else {}))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ctl.bind_optimizer(opt)
    return model, ctl, opt


@pytest.mark.parametrize("method", [m for m in sparse_core.METHODS if m not in ("dense", "half")])
def test_controller_round_trip_is_exact(method):
    total = 24
    model, ctl, opt = build(method, total)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(5)
    run(method, model, ctl, opt, gen, total, 0)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, ctl, opt = build(method, total)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(5)
    run(method, model, ctl, opt, gen, total // 2, 0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ctl": ctl.state_dict(),
                "gen": gen.get_state(), "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model, ctl, opt = build(method, total)  # a fresh model, optimizer and controller
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    ctl.load_state_dict(saved["ctl"])
    gen = torch.Generator()
    gen.set_state(saved["gen"])
    torch.set_rng_state(saved["rng"])
    run(method, model, ctl, opt, gen, total - total // 2, total // 2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, straight[k]), k


@pytest.mark.parametrize("method", list(sparse_core.METHODS))
def test_every_method_trains_a_tiny_transformer(method):
    losses, ctl, model = train_tiny(method, steps=60)
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5
    for layer in ctl.layers.values():
        if layer.mode == "sparse":
            assert is_valid_24(layer.mask, dim=1)


def test_methods_registry_lists_every_method_with_a_description():
    assert list(sparse_core.METHODS) == ["dense", "half", "ste", "sr-ste", "2by4", "step", "bi-mask", "s-ste"]
    assert all(isinstance(d, str) and d for d in sparse_core.METHODS.values())


@pytest.mark.parametrize("variant", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_step_freezes_v_with_every_adamw_variant_and_gradient_decay(variant):
    layer, ctl = one_layer("step", decay="gradient", lambda_w=0.1, min_switch_fraction=0.05,
                           max_switch_fraction=0.05)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, **variant)
    ctl.bind_optimizer(opt)
    gen = torch.Generator().manual_seed(0)
    for step in range(10):
        layer(torch.randn(16, 8, generator=gen)).pow(2).sum().backward()
        ctl.before_optimizer_step(step)  # the decay lands on the gradient before STEP sets exp_avg_sq
        opt.step()
        opt.zero_grad()
        ctl.after_optimizer_step(step)
    assert ctl.method.switched_at == 5
    state = opt.state[layer.weight]
    v_hat = state["exp_avg_sq"] / (1 - opt.param_groups[0]["betas"][1] ** float(state["step"]))
    assert torch.isfinite(layer.weight).all()
    assert torch.allclose(v_hat, ctl.method.v_frozen["mlp.fc1"], rtol=1e-4, atol=1e-12)


def test_bimask_research_runs_on_steps_without_a_mask_refresh():
    layer, ctl = one_layer("bi-mask", mask_refresh_interval=3, research_interval=2)
    calls = []
    search = ctl.method._search
    ctl.method._search = lambda c: (calls.append(True), search(c))
    for step in range(6):
        ctl.after_optimizer_step(step)
    assert len(calls) == 3  # after steps 2, 4 and 6, whether or not the mask was refreshed then


def test_load_state_dict_undoes_a_later_dense_switch():
    layer, ctl = one_layer("2by4", lambda_w=0.1, dense_ft_fraction=0.3)
    saved = ctl.state_dict()
    for step in range(30):
        ctl.after_optimizer_step(step)
    assert ctl.dense and layer.mode == "dense"
    ctl.load_state_dict(saved)
    assert not ctl.dense and layer.mode == "sparse"
    with pytest.raises(ValueError, match="lacks keys"):
        ctl.load_state_dict({"method": "2by4"})
