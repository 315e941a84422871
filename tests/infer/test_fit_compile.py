"""fit(compile=...): the option's checks, the "auto" rule, the fallback to eager when compiling
fails, the guards and checkpoints on the compiled path, agreement with the eager step, no graph
break in the compiled loss, and no lasting change to torch's global state.

Most tests stand in for ``torch.compile`` with a function that returns its argument (the
compiled path's code runs, nothing is compiled); the one test marked slow compiles for real (one
small flow, one graph: Inductor compiles once, the later fits reuse it). The graph-break test
traces with TorchDynamo only (seconds)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from pyro_flows import flows
from pyro_flows.data import two_moons
from pyro_flows.infer import NonFiniteLossError, _compiled_step, fit
from pyro_flows.infer._compiled_step import check_compile, unchecked_nll, worth_compiling

OPTIONS = dict(batch_size=64, validation=None, progress=False, threads=1)


def moons(n: int = 300, seed: int = 0) -> torch.Tensor:
    # 300 rows in batches of 64: four full batches and one of 44 (eager on the compiled path)
    return two_moons(n, generator=torch.Generator().manual_seed(seed))


def small_flow(seed: int = 0, builder=flows.maf) -> nn.Module:
    torch.manual_seed(seed)
    return builder(2, num_transforms=2, hidden_dims=(8,))


class FakeCompile:
    """Stands in for ``torch.compile``: returns the function (or one that fails) and counts."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls, self.fail = 0, fail

    def __call__(self, fn, **kwargs):
        self.calls += 1
        if self.fail == "wrap":
            raise RuntimeError("no compiler here")
        if self.fail == "forward":
            def broken(*args):
                raise RuntimeError("BackendCompilerFailed (simulated)")
            return broken
        if self.fail == "backward":
            return lambda *args: FailingBackward.apply(fn(*args))
        return fn


class FailingBackward(torch.autograd.Function):
    """Identity forward; a backward that fails like a backward compilation that failed."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward compilation failed (simulated)")


def same_run(a: nn.Module, b: nn.Module, ha, hb, rtol: float) -> None:
    assert len(ha.train_nll) == len(hb.train_nll)
    for x, y in zip(ha.train_nll, hb.train_nll, strict=True):
        assert abs(x - y) <= rtol * abs(y), (ha.train_nll, hb.train_nll)
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(value, other, rtol=rtol, atol=rtol, msg=key)


# -- the option and the "auto" rule ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["yes", "AUTO", 1, 0, None, 2.0])
def test_compile_accepts_only_auto_true_false(value):
    with pytest.raises(ValueError, match=r"compile must be one of \('auto', True, False\)"):
        check_compile(value)
    with pytest.raises(ValueError, match="compile must be one of"):
        fit(small_flow(), moons(), epochs=1, compile=value, **OPTIONS)


def test_worth_compiling_compares_the_eager_estimate_with_the_threshold():
    limit = _compiled_step.AUTO_MIN_EAGER_SECONDS
    assert worth_compiling(eager_step_seconds=0.01, steps_left=int(2 * limit / 0.01), max_time=None)
    assert not worth_compiling(eager_step_seconds=0.01, steps_left=int(limit / 0.02),
                               max_time=None)
    # a time budget caps the estimate: a short max_time never pays for the compilation
    assert not worth_compiling(eager_step_seconds=0.01, steps_left=10**9, max_time=limit / 2)


def test_auto_stays_eager_on_a_short_run(monkeypatch):
    fake = FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    history = fit(small_flow(), moons(), epochs=4, **OPTIONS)  # 20 steps: seconds
    assert fake.calls == 0 and not history.compiled and history.compile_seconds is None


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_compiles_after_the_probe_when_the_run_is_long(monkeypatch, seed):
    monkeypatch.setattr(_compiled_step, "AUTO_MIN_EAGER_SECONDS", 0.0)
    fake = FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    auto, eager = small_flow(seed), small_flow(seed)
    data = moons(seed=seed + 10)
    h_auto = fit(auto, data, epochs=3, seed=seed, **OPTIONS)
    h_eager = fit(eager, data, epochs=3, seed=seed, compile=False, **OPTIONS)
    assert fake.calls == 1 and h_auto.compiled and not h_eager.compiled
    # the compiled path scores the flow without Flow.log_prob's checks: the same numbers
    same_run(auto, eager, h_auto, h_eager, rtol=1e-5)


def test_nothing_is_compiled_when_distributed():
    loss = _compiled_step.BatchLoss(
        small_flow(), nn.Identity(), compile=True, rows=64, distributed=True,
        device=torch.device("cpu"), max_time=None,
    )
    assert loss.compiled is None and loss.choice is False


# -- the fallback --------------------------------------------------------------------------------
@pytest.mark.parametrize("fail", ["wrap", "forward", "backward"])
def test_a_failed_compilation_warns_and_trains_eagerly(monkeypatch, fail):
    monkeypatch.setattr(torch, "compile", FakeCompile(fail))
    tried, eager = small_flow(3, flows.realnvp), small_flow(3, flows.realnvp)
    with pytest.warns(RuntimeWarning, match="torch.compile of the training step failed"):
        h_tried = fit(tried, moons(seed=3), epochs=2, compile=True, **OPTIONS)
    h_eager = fit(eager, moons(seed=3), epochs=2, compile=False, **OPTIONS)
    assert not h_tried.compiled
    same_run(tried, eager, h_tried, h_eager, rtol=1e-6)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in tried.parameters())


# -- the guards on the compiled path -------------------------------------------------------------
class NaNFrom(nn.Module):
    """Wraps a flow: from the ``n``-th training call, a NaN loss (``what="loss"``) or a finite
    loss with a NaN gradient (``what="gradient"``)."""

    def __init__(self, flow: nn.Module, n: int, what: str) -> None:
        super().__init__()
        self.flow, self.n, self.what, self.calls = flow, n, what, 0
        self.input_dim, self.context_dim = flow.input_dim, None

    def log_prob(self, x, context=None):
        lp = self.flow.log_prob(x)
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= self.n:
                return lp * float("nan") if self.what == "loss" else NaNGradient.apply(lp)
        return lp


class NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_the_compiled_path_keeps_the_finiteness_guard(monkeypatch, what):
    monkeypatch.setattr(torch, "compile", FakeCompile())
    model = NaNFrom(small_flow(4), n=8, what=what)  # five batches an epoch: call 8 is epoch 1
    states = []
    with pytest.raises(NonFiniteLossError, match=f"non-finite .*{what}.* epoch 1, batch 2") as e:
        fit(model, moons(), epochs=4, compile=True, clip_grad_norm=1.0, **OPTIONS,
            callback=lambda epoch, h: states.append(
                {k: v.clone() for k, v in model.state_dict().items()}))
    assert e.value.history.epochs == 1 and e.value.history.compiled
    for key, value in states[-1].items():  # the end of epoch 0: the last good state
        assert torch.equal(model.state_dict()[key], value), key
    assert all(p.grad is None for p in model.parameters())


def test_a_compiled_overflow_raises_the_flows_own_error(monkeypatch):
    """A non-finite compiled loss is scored again eagerly: Flow.log_prob's ValueError for rows
    that overflow the dtype, as in the eager step."""
    monkeypatch.setattr(torch, "compile", FakeCompile())
    flow = small_flow(5)
    data = moons()
    data[7] = 3e19  # finite, but |z|^2 / 2 overflows float32
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    for compile in (True, False):
        # the row overflows at the last good parameters too: the data's fault, the flow's own
        # error (not NonFiniteLossError), and the steps taken before it are undone
        with pytest.raises(ValueError, match="too far out"):
            fit(flow, data, epochs=1, compile=compile, **OPTIONS)
        assert all(torch.equal(flow.state_dict()[k], v) for k, v in before.items())


# -- for real: agreement, resume, no graph break, no lasting global state ----------------------
@pytest.mark.slow
def test_compiled_fit_agrees_with_eager_and_resumes_exactly(tmp_path):
    import torch._dynamo

    config = torch._dynamo.config.get_config_copy()
    data = moons(seed=6)
    compiled, eager = small_flow(6), small_flow(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        h_compiled = fit(compiled, data, epochs=3, compile=True, **OPTIONS)
    h_eager = fit(eager, data, epochs=3, compile=False, **OPTIONS)
    assert h_compiled.compiled and h_compiled.compile_seconds > 0
    same_run(compiled, eager, h_compiled, h_eager, rtol=1e-4)

    # interrupted after epoch 1 and resumed, compiled both times (same graph: no new compile)
    path = tmp_path / "fit.pt"

    def crash(epoch, history):
        if epoch == 1:
            raise KeyboardInterrupt

    resumed = small_flow(6)
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, data, epochs=3, compile=True, checkpoint=path, callback=crash, **OPTIONS)
    h_resumed = fit(resumed, data, epochs=3, compile=True, checkpoint=path, resume=True,
                    **OPTIONS)
    assert h_resumed.train_nll == pytest.approx(h_compiled.train_nll, rel=1e-6)
    same_run(resumed, compiled, h_resumed, h_compiled, rtol=1e-6)
    assert torch._dynamo.config.get_config_copy() == config


@pytest.mark.parametrize("builder", [flows.realnvp, flows.maf, flows.nsf])
def test_the_compiled_loss_has_no_graph_break(builder):
    import torch._dynamo

    flow = small_flow(7, builder)
    loss = unchecked_nll(flow, nn.Identity())
    x = moons(64, seed=7)
    explanation = torch._dynamo.explain(loss)(x, None)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch.testing.assert_close(loss(x, None), -flow.log_prob(x).mean())


def test_importing_pyro_flows_does_not_import_dynamo():
    code = "import sys, pyro_flows, pyro_flows.infer; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
