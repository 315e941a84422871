"""The training loops' guards: non-finite gradients and validation scores stop the training with
the last good state, every loop's options are checked before anything happens, checkpoints are
checked whole before anything is changed (another architecture, set-up, kind or data; empty,
truncated or corrupt files), and a SIGKILL during a checkpoint write loses nothing."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pyro_flows import flows
from pyro_flows.data import two_moons
from pyro_flows.ebm import GaussianEnergy, train_ebm
from pyro_flows.infer import NonFiniteLossError, _checkpoint, evaluate_nll, fit, fit_target
from pyro_flows.infer.distill import distill

ROOT = Path(__file__).resolve().parents[2]
NAN, INF = float("nan"), float("inf")


def moons(n: int = 512, seed: int = 0) -> torch.Tensor:
    return two_moons(n, generator=torch.Generator().manual_seed(seed))


def small_flow(seed: int = 0, hidden: int = 16, builder: Callable[..., nn.Module] = flows.maf):
    torch.manual_seed(seed)
    return builder(2, num_transforms=2, hidden_dims=(hidden,))


def gaussian(z: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(torch.tensor([1.0, -1.0]), 2.0).log_prob(z).sum(-1)


def copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restored copies are exact copies (no arithmetic), so ``torch.equal`` is right here."""
    now = module.state_dict()
    assert set(now) == set(state)
    for key, value in state.items():
        assert torch.equal(now[key], value), key


@contextmanager
def unchanged(module: nn.Module, rng: bool = True) -> Iterator[None]:
    """The module's state dict (and, with ``rng``, the global torch RNG: for calls refused
    before training starts) are exactly as before the block."""
    state, rng_before = copy_state(module), torch.get_rng_state()
    yield
    assert_same_state(module, state)
    if rng:
        assert torch.equal(torch.get_rng_state(), rng_before), "the global RNG state changed"


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is NaN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * NAN


class Poisoned(nn.Module):
    """A flow whose training log density gets a NaN gradient from the ``nan_grad_at``-th
    training call, and whose eval-mode log density is NaN from the ``nan_eval_at``-th call."""

    def __init__(self, flow: nn.Module, nan_grad_at: int | None = None,
                 nan_eval_at: int | None = None) -> None:
        super().__init__()
        self.flow, self.input_dim, self.context_dim = flow, flow.input_dim, None
        self.nan_grad_at, self.nan_eval_at = nan_grad_at, nan_eval_at
        self.train_calls = self.eval_calls = 0

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        lp = self.flow.log_prob(x)
        if self.training:
            self.train_calls += 1
            if self.nan_grad_at is not None and self.train_calls >= self.nan_grad_at:
                return NaNGradient.apply(lp)
        else:
            self.eval_calls += 1
            if self.nan_eval_at is not None and self.eval_calls >= self.nan_eval_at:
                return lp * NAN
        return lp


# -- 1. non-finite gradients and validation scores ------------------------------------------------
@pytest.mark.parametrize("clip", [None, 10.0])
def test_fit_stops_on_a_nan_gradient_with_a_finite_loss(clip):
    model = Poisoned(small_flow(), nan_grad_at=10)  # 4 batches an epoch: call 10 is epoch 2
    states = []
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient .* epoch 2, batch 1") as e:
        fit(model, moons(512), epochs=5, batch_size=128, validation=None, clip_grad_norm=clip,
            progress=False, callback=lambda epoch, h: states.append(copy_state(model)))
    history = e.value.history
    assert history.stopped == "non-finite gradient" and history.epochs == 2
    assert_same_state(model, states[-1])  # the end of epoch 1, the last good one
    assert all(p.grad is None for p in model.parameters())  # no NaN gradient left behind


def test_fit_never_keeps_a_nan_validation_score_as_the_best():
    model = Poisoned(small_flow(), nan_eval_at=3)  # one validation pass an epoch: epoch 2 is NaN
    states = []
    with pytest.raises(NonFiniteLossError, match=r"non-finite validation NLL \(nan\)") as e:
        fit(model, moons(512), epochs=5, batch_size=128, patience=None, progress=False,
            callback=lambda epoch, h: states.append(copy_state(model)))
    history = e.value.history
    assert history.stopped == "non-finite validation NLL" and history.epochs == 2
    assert all(math.isfinite(v) for v in history.val_nll) and history.best_epoch in (0, 1)
    assert math.isfinite(history.best_val_nll)
    assert_same_state(model, states[-1])


def test_fit_target_stops_on_a_nan_gradient():
    flow = small_flow(builder=flows.realnvp)
    calls = {"n": 0}

    def target(z):
        calls["n"] += 1
        return NaNGradient.apply(gaussian(z)) if calls["n"] >= 5 else gaussian(z)

    with unchanged(flow, rng=False), pytest.raises(NonFiniteLossError, match="gradient") as e:
        fit_target(flow, target, steps=20, batch_size=16, eval_every=0, progress=False,
                   method="reverse_kl")
    assert e.value.history.stopped == "non-finite gradient" and e.value.history.steps == 4
    assert all(p.grad is None for p in flow.parameters())


class Teacher(nn.Module):
    """A standard normal density whose gradient turns NaN from the ``nan_at``-th call."""

    input_dim, context_dim = 2, None

    def __init__(self, nan_at: int) -> None:
        super().__init__()
        self.nan_at, self.calls = nan_at, 0

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        lp = -0.5 * (x**2).sum(-1) - math.log(2 * math.pi)
        return NaNGradient.apply(lp) if self.calls >= self.nan_at else lp


def test_distill_stops_on_a_nan_gradient():
    torch.manual_seed(0)
    student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    with unchanged(student, rng=False), pytest.raises(NonFiniteLossError, match="gradient") as e:
        distill(Teacher(nan_at=4), student, steps=20, batch_size=16, eval_every=0,
                progress=False)
    assert e.value.history.stopped == "non-finite gradient" and e.value.history.steps == 3


# -- 3 and 5. every loop's options, checked before anything happens -----------------------------
def _fit(module: nn.Module, **kw: Any) -> None:
    fit(module, moons(64), **({"epochs": 1, "batch_size": 32, "progress": False} | kw))


STEPS = {"steps": 2, "batch_size": 8, "eval_samples": 16, "progress": False}


def _fit_target(module: nn.Module, **kw: Any) -> None:
    fit_target(module, gaussian, **(STEPS | kw))


def _distill(module: nn.Module, **kw: Any) -> None:
    with torch.random.fork_rng():  # building the teacher is no part of what is checked
        teacher = small_flow(seed=1)
    distill(teacher, module, **(STEPS | kw))


def _train_ebm(module: nn.Module, **kw: Any) -> None:
    train_ebm(module, moons(64), "ssm", **({"steps": 2, "batch_size": 32, "progress": False} | kw))


LOOPS: dict[str, tuple[Callable[[], nn.Module], Callable[..., None]]] = {
    "fit": (small_flow, _fit),
    "fit_target": (lambda: small_flow(builder=flows.iaf), _fit_target),
    "distill": (lambda: small_flow(builder=flows.iaf), _distill),
    "train_ebm": (lambda: GaussianEnergy(2), _train_ebm),
}
SHARED = {  # option: [(value, error, fragments of the message)]
    "lr": [("0.01", TypeError, ["lr", "'0.01' (str)"]), (0.0, ValueError, ["lr", "0.0"]),
           (-1.0, ValueError, ["lr", "-1.0"]), (NAN, ValueError, ["lr", "nan"]),
           (INF, ValueError, ["lr", "inf"])],
    "seed": [("x", TypeError, ["seed", "'x' (str)"]), (1.5, TypeError, ["seed", "1.5"]),
             (True, TypeError, ["seed", "True"])],
    "clip_grad_norm": [(0.0, ValueError, ["clip_grad_norm", "0.0"]),
                       (-1.0, ValueError, ["clip_grad_norm", "-1.0"]),
                       (NAN, ValueError, ["clip_grad_norm", "nan"]),
                       ("1", TypeError, ["clip_grad_norm", "'1' (str)"])],
}
STEP_LOOPS = {  # the options fit, fit_target and distill share
    "max_time": [(-1.0, ValueError, ["max_time", "-1.0"]),
                 ("10", TypeError, ["max_time", "'10' (str)"])],
    "checkpoint_every": [(0, ValueError, ["checkpoint_every", "0"]),
                         (-2, ValueError, ["checkpoint_every", "-2"]),
                         (1.0, TypeError, ["checkpoint_every", "1.0"])],
    "callback": [(3, TypeError, ["callback", "3 (int)"])],
    "checkpoint": [(3, TypeError, ["checkpoint", "3 (int)"])],
    "resume": [("yes", TypeError, ["resume", "'yes' (str)"])],
}
OWN = {
    "fit": {"patience": [(0, ValueError, ["patience", "0"]), (-1, ValueError, ["patience", "-1"]),
                         (2.5, TypeError, ["patience", "2.5"])],
            "epochs": [(0, ValueError, ["epochs", "0"]), ("3", TypeError, ["epochs", "'3'"])],
            "batch_size": [(0, ValueError, ["batch_size", "0"])],
            "weight_decay": [(-1.0, ValueError, ["weight_decay", "-1.0"]),
                             (NAN, ValueError, ["weight_decay", "nan"])],
            "device": [("gpu", ValueError, ["device", "'gpu' (str)"]),
                       (3.5, ValueError, ["device", "3.5 (float)"])]},
    "fit_target": {"eval_every": [(-1, ValueError, ["eval_every", "-1"]),
                                  (1.5, TypeError, ["eval_every", "1.5"])],
                   "steps": [(0, ValueError, ["steps", "0"]), (-5, ValueError, ["steps", "-5"])],
                   "eval_samples": [(0, ValueError, ["eval_samples", "0"])]},
    "distill": {"eval_every": [(-1, ValueError, ["eval_every", "-1"])],
                "steps": [(0, ValueError, ["steps", "0"])],
                "batch_size": [("8", TypeError, ["batch_size", "'8'"])]},
    "train_ebm": {"sampler_lr": [(0.0, ValueError, ["sampler_lr", "0.0"]),
                                 ("x", TypeError, ["sampler_lr", "'x'"])],
                  "sampler_steps": [(0, ValueError, ["sampler_steps", "0"])],
                  "steps": [(0, ValueError, ["steps", "0"])]},
}


def _cases() -> list[Any]:
    cases = []
    for loop in LOOPS:
        options = dict(SHARED)
        if loop != "train_ebm":
            options.update(STEP_LOOPS)
        options.update(OWN[loop])
        for name, bad in options.items():
            for value, error, fragments in bad:
                cases.append(pytest.param(loop, name, value, error, fragments,
                                          id=f"{loop}-{name}={value!r}"))
    return cases


@pytest.mark.parametrize(("loop", "name", "value", "error", "fragments"), _cases())
def test_bad_options_are_refused_before_anything_happens(loop, name, value, error, fragments):
    make, call = LOOPS[loop]
    module = make()
    extra = {"checkpoint": "unused.pt"} if name == "resume" else {}
    with unchanged(module), pytest.raises(error) as info:
        call(module, **{name: value}, **extra)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("loop", ["fit", "fit_target", "distill"])
def test_a_folder_is_not_a_checkpoint_file(loop, tmp_path):
    make, call = LOOPS[loop]
    with pytest.raises(ValueError, match="checkpoint must be a file path, got the folder"):
        call(make(), checkpoint=tmp_path)


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match=r"model must be an nn.Module with log_prob.*got str"):
        fit("not a model", moons(64), progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rsample_and_log_prob.*got str"):
        fit_target("not a flow", gaussian, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="student must be an nn.Module.*got str"):
        distill(small_flow(), "not a flow", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="energy must be an nn.Module"):
        train_ebm("not an energy", moons(64), progress=False)  # type: ignore[arg-type]


def test_evaluate_nll_refuses_empty_data_and_bad_batch_sizes():
    flow = small_flow()
    with pytest.raises(ValueError, match=r"at least one row .* shape \(0, 2\)"):
        evaluate_nll(flow, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        evaluate_nll(flow, moons(8), batch_size=0)
    with pytest.raises(TypeError, match=r"batch_size must be a positive int, got '8' \(str\)"):
        evaluate_nll(flow, moons(8), batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"one row per data row \(8\), got shape \(7, 1\)"):
        evaluate_nll(flow, moons(8), context=torch.zeros(7, 1))
    assert math.isfinite(evaluate_nll(flow, moons(8), batch_size=3))


# -- 2, 4 and 5. checkpoints: checked whole, refused without changing anything -------------------
def fit_checkpoint(path: Path, data: torch.Tensor | None = None, **kw: Any) -> None:
    options = {"epochs": 2, "batch_size": 64, "progress": False, "checkpoint": path}
    fit(small_flow(), moons(256) if data is None else data, **(options | kw))


def refused_resume(module: nn.Module, path: Path, match: str, **kw: Any) -> None:
    """Resuming ``module`` from ``path`` is a ValueError matching ``match`` that changes
    neither the module, the global RNG nor the file."""
    before = path.read_bytes()
    options = {"epochs": 2, "batch_size": 64, "progress": False, "checkpoint": path,
               "resume": True}
    with unchanged(module), pytest.raises(ValueError, match=match) as info:
        fit(module, kw.pop("data", moons(256)), **(options | kw))
    assert str(path) in str(info.value) and "resume=False" in str(info.value)
    assert path.read_bytes() == before


def test_a_checkpoint_of_another_architecture_is_refused_whole(tmp_path):
    path = tmp_path / "c.pt"
    fit_checkpoint(path)
    # same parameter names, other widths: before, every tensor of matching shape was copied in
    refused_resume(small_flow(seed=1, hidden=32), path,
                   r"another architecture \(Flow: wrong shapes: transforms\.0\.made\.\w+")
    # another builder: other parameter names
    refused_resume(small_flow(seed=1, builder=flows.realnvp), path,
                   r"missing keys: transforms\.0\..*; unexpected keys: transforms\.0\.made")


def test_a_checkpoint_for_other_data_or_options_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    data = moons(256)
    fit_checkpoint(path, data)
    flow = small_flow()
    refused_resume(flow, path, "rows differ from those it was trained on", data=data + 0.5)
    refused_resume(flow, path, "rows differ", data=data, seed=1)  # another validation split
    refused_resume(flow, path, "lr=0.002 in the checkpoint, lr=0.01 now", data=data, lr=1e-2)
    refused_resume(flow, path, "epochs=2 in the checkpoint, epochs=3 now", data=data, epochs=3)
    fit_checkpoint(tmp_path / "d.pt", data)  # the same set-up and data: accepted
    history = fit(small_flow(), data, epochs=2, batch_size=64, progress=False,
                  checkpoint=tmp_path / "d.pt", resume=True)
    assert history.epochs == 2 and history.stopped == "completed"


def test_a_damaged_optimiser_state_or_rng_state_changes_nothing(tmp_path):
    path = tmp_path / "c.pt"
    fit_checkpoint(path)
    saved = _checkpoint.load(path)
    saved["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    torch.save(saved, path)
    refused_resume(small_flow(seed=1), path, r"optimiser state 'exp_avg' of shape \(3,\)")
    # passes the checks but fails to load (after the model and the optimiser): all rolled back
    fit_checkpoint(path)
    saved = _checkpoint.load(path)
    saved["rng"]["numpy"] = ("not", "a", "numpy", "state")
    torch.save(saved, path)
    refused_resume(small_flow(seed=1), path, "could not be loaded")


def test_a_checkpoint_of_another_loop_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    flow = small_flow(builder=flows.iaf)
    fit_target(flow, gaussian, steps=2, batch_size=8, eval_samples=16, progress=False,
               checkpoint=path)
    refused_resume(small_flow(), path, "was written by fit_target, not by fit")
    with unchanged(flow), pytest.raises(ValueError, match="written by fit_target, not by distill"):
        _distill(flow, checkpoint=path, resume=True)


def test_step_loops_refuse_another_architecture_or_set_up_unchanged(tmp_path):
    path = tmp_path / "c.pt"
    _fit_target(small_flow(builder=flows.iaf), checkpoint=path)
    wider = small_flow(seed=2, hidden=32, builder=flows.iaf)
    with unchanged(wider), pytest.raises(ValueError, match="another architecture.*wrong shapes"):
        _fit_target(wider, checkpoint=path, resume=True)
    same = small_flow(seed=2, builder=flows.iaf)
    with unchanged(same), pytest.raises(ValueError, match="batch_size=8 in the checkpoint"):
        fit_target(same, gaussian, steps=2, batch_size=4, progress=False, checkpoint=path,
                   resume=True)


def _damaged(kind: str, path: Path, tmp_path: Path) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint\xff" * 20)
    elif kind == "truncated":
        _fit(small_flow(), checkpoint=tmp_path / "whole.pt")
        whole = (tmp_path / "whole.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    else:
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize("loop", ["fit", "fit_target", "distill"])
@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "a list"])
def test_unreadable_checkpoints_are_a_clear_value_error(loop, kind, tmp_path):
    path = tmp_path / "bad.pt"
    _damaged(kind, path, tmp_path)
    make, call = LOOPS[loop]
    module = make()
    with unchanged(module), pytest.raises(ValueError) as info:
        call(module, checkpoint=path, resume=True)
    message = str(info.value)
    assert str(path) in message and "checkpoint of pyro_flows" in message, message


# -- 7. a SIGKILL in the middle of a checkpoint write ---------------------------------------------
CHILD = textwrap.dedent(
    """
    import io, os, sys, time
    import torch
    torch.set_num_threads(1)
    from pyro_flows import flows
    from pyro_flows.data import two_moons
    from pyro_flows.infer import fit

    path = sys.argv[1]
    real_save, writes = torch.save, []

    def save_then_hang(obj, f):  # the third checkpoint: half the bytes, then wait for the kill
        writes.append(1)
        if len(writes) < 3:
            return real_save(obj, f)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        print("WRITING", flush=True)
        time.sleep(120)

    torch.save = save_then_hang
    torch.manual_seed(3)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(16,))
    data = two_moons(600, generator=torch.Generator().manual_seed(0))
    fit(flow, data, epochs=5, batch_size=128, seed=7, progress=False, checkpoint=path)
    """
)


def _train(checkpoint: Path | None = None, resume: bool = False):
    torch.manual_seed(3)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(16,))
    data = two_moons(600, generator=torch.Generator().manual_seed(0))
    history = fit(flow, data, epochs=5, batch_size=128, seed=7, progress=False,
                  checkpoint=checkpoint, resume=resume)
    return flow, history


def test_sigkill_during_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(tmp_path):
    path = tmp_path / "ckpt.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # blocks until the third write is half done
        assert line.strip() == "WRITING", child.stderr.read()[-2000:]
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # the half-written file never replaced the checkpoint: it holds the end of epoch 1
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1, list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        _checkpoint.load(partial[0])
    assert _checkpoint.load(path)["loop"]["epoch"] == 2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed, resumed_history = _train(path, resume=True)
        reference, reference_history = _train()
    finally:
        torch.set_num_threads(threads)
    assert resumed_history.epochs == 5 and resumed_history.stopped == "completed"
    assert resumed_history.train_nll == pytest.approx(reference_history.train_nll, rel=1e-5)
    assert resumed_history.val_nll == pytest.approx(reference_history.val_nll, rel=1e-5)
    for (key, a), b in zip(resumed.state_dict().items(), reference.state_dict().values(),
                           strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), key
