"""The per-step cuts of issue 18: the fused Adam of the training loops (same trajectory to
rounding, checkpoints of either implementation resume) and the gradient clipping that scales
only when it must (same gradients as ``clip_grad_norm_``)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pyro_flows import flows
from pyro_flows.infer import _adam, fit, fit_target
from pyro_flows.infer._adam import adam, fused_supported
from pyro_flows.infer._steps import gradient_norm, gradients_are_finite


def gaussian(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2).sum(-1)


def small_flow(dim: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return flows.realnvp(dim, num_transforms=2, hidden_dims=(16,))


# -- fused Adam -----------------------------------------------------------------------------------
def test_fused_only_where_torch_has_the_kernel():
    assert fused_supported([torch.zeros(2), torch.zeros(3, dtype=torch.float64)])
    assert not fused_supported([torch.zeros(2, dtype=torch.int64)])
    assert not fused_supported([torch.zeros(2, device="meta")])
    on_meta = adam([torch.nn.Parameter(torch.zeros(2, device="meta"))], lr=0.1)
    assert not on_meta.param_groups[0]["fused"]
    assert adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1).param_groups[0]["fused"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam_follows_the_default_one_to_rounding(seed, decoupled):
    """A random least-squares problem per seed, 50 steps each way from the same start."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(20, 5, generator=gen), torch.randn(20, generator=gen)
    start = torch.randn(5, generator=gen)
    ends = []
    for make in (adam, lambda ps, **kw: _plain(ps, **kw)):
        w = torch.nn.Parameter(start.clone())
        opt = make([w], lr=0.05, weight_decay=0.01, decoupled=decoupled)
        for _ in range(50):
            opt.zero_grad()
            ((a @ w - b) ** 2).mean().backward()
            opt.step()
        ends.append(w.detach())
    assert not torch.allclose(ends[0], start, atol=1e-2)  # it moved
    torch.testing.assert_close(ends[0], ends[1], rtol=1e-5, atol=1e-6)


def _plain(params, *, lr, weight_decay, decoupled):
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(params, lr=lr, weight_decay=weight_decay)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_state_of_the_default_adam_loads_and_stays_fused(dtype):
    w = torch.nn.Parameter(torch.randn(4, dtype=dtype))
    plain = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.randn(4, dtype=dtype)
    plain.step()
    fused = adam([w], lr=0.1)
    saved = plain.state_dict()  # as from a file: each load gets its own tensors
    fused.load_state_dict(copy.deepcopy(saved))
    assert fused.param_groups[0]["fused"] is True
    assert fused.param_groups[0]["foreach"] is None
    twin = torch.nn.Parameter(w.detach().clone())
    plain_twin = torch.optim.Adam([twin], lr=0.1)
    plain_twin.load_state_dict(copy.deepcopy(saved))
    w.grad, twin.grad = torch.ones(4, dtype=dtype), torch.ones(4, dtype=dtype)
    fused.step()
    plain_twin.step()
    torch.testing.assert_close(w.detach(), twin.detach(), rtol=1e-6, atol=1e-6)


def _crash_at(step_to_crash: int):
    class Stop(Exception):
        pass

    def crash(step, history):
        if step == step_to_crash:
            raise Stop

    return Stop, crash


@pytest.mark.parametrize("fused_first, fused_then", [(False, True), (True, False)])
def test_fit_target_resumes_a_checkpoint_of_the_other_adam(tmp_path, monkeypatch, fused_first,
                                                         fused_then):
    """A checkpoint written by the default Adam (the code before issue 18) resumes with the
    fused one, and the other way round: the run ends where an uninterrupted one does (to
    rounding, the two kernels differ in the last bits)."""
    path = tmp_path / "ckpt.pt"
    reference = small_flow(seed=4)
    full = fit_target(reference, gaussian, steps=60, batch_size=16, progress=False, seed=3)
    stop, crash = _crash_at(40)
    monkeypatch.setattr(_adam, "fused_supported", lambda ps: fused_first)
    with pytest.raises(stop):
        fit_target(small_flow(seed=4), gaussian, steps=60, batch_size=16, progress=False,
                   seed=3, checkpoint=path, checkpoint_every=20, callback=crash)
    monkeypatch.setattr(_adam, "fused_supported", lambda ps: fused_then)
    flow = small_flow(seed=4)
    resumed = fit_target(flow, gaussian, steps=60, batch_size=16, progress=False, seed=3,
                         checkpoint=path, resume=True)
    assert resumed.elbo == pytest.approx(full.elbo, abs=1e-4)
    for p, q in zip(flow.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_fit_resumes_a_checkpoint_of_the_default_adamw(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(256, 2) * torch.tensor([1.0, 0.5]) + 1.0

    def run(**kw):
        flow = small_flow(seed=5)
        history = fit(flow, x, epochs=4, batch_size=64, progress=False, seed=1, **kw)
        return flow, history

    reference, ref_history = run()
    stop, crash = _crash_at(1)
    monkeypatch.setattr(_adam, "fused_supported", lambda ps: False)
    with pytest.raises(stop):
        run(checkpoint=tmp_path / "fit.pt", callback=crash)
    monkeypatch.undo()
    flow, history = run(checkpoint=tmp_path / "fit.pt", resume=True)
    assert history.val_nll == pytest.approx(ref_history.val_nll, abs=1e-4)
    for p, q in zip(flow.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# -- gradient clipping ----------------------------------------------------------------------------
def _params_with_grads(seed: int, scale: float) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (3, 7, 1)]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=gen)
    return params


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
@pytest.mark.parametrize("clip", [None, 1.0, 10.0, math.inf])
def test_clipping_gives_what_clip_grad_norm_gives(seed, scale, clip):
    ours, theirs = _params_with_grads(seed, scale), _params_with_grads(seed, scale)
    norm = gradient_norm(ours, clip)
    expected = torch.nn.utils.clip_grad_norm_(theirs, math.inf if clip is None else clip)
    torch.testing.assert_close(norm, expected, rtol=1e-6, atol=0.0)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0.0)
    if clip is not None and float(expected) > clip:
        clipped = torch.cat([p.grad for p in ours]).norm()
        assert float(clipped) == pytest.approx(clip, rel=1e-5)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_gradient_is_refused_and_cleared(bad):
    params = _params_with_grads(0, 1.0)
    params[1].grad[2] = bad
    assert not math.isfinite(float(gradient_norm(params, 1.0)))
    assert not gradients_are_finite(params, 1.0)
    assert all(p.grad is None for p in params)
