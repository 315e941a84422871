"""fit(): training, validation, early stopping, checkpoints that resume exactly, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pyro_flows import flows
from pyro_flows.data import two_moons
from pyro_flows.infer import NonFiniteLossError, _checkpoint, evaluate_nll, fit


def moons(n: int = 1024, seed: int = 0) -> torch.Tensor:
    return two_moons(n, generator=torch.Generator().manual_seed(seed))


def small_flow(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return flows.maf(2, num_transforms=2, hidden_dims=(16,), **kw)


class Stop(Exception):
    pass


def test_fit_improves_and_reports_history():
    flow = small_flow()
    data = moons(2048)
    before = evaluate_nll(flow, data)
    history = fit(flow, data, epochs=8, batch_size=256, progress=False)
    assert history.epochs == 8 and history.stopped == "completed"
    assert len(history.val_nll) == len(history.lr) == len(history.wall_time) == 8
    assert history.train_nll[-1] < history.train_nll[0] < before
    assert history.lr[-1] < history.lr[0]  # cosine schedule
    assert all(b >= a for a, b in zip(history.wall_time, history.wall_time[1:], strict=False))
    assert evaluate_nll(flow, data) < before - 0.5


def test_early_stopping_restores_the_best_parameters():
    flow = small_flow()
    data = moons(1024)
    shifted = moons(256, seed=1) + torch.tensor([6.0, 0.0])  # validation far from training
    seen = []
    history = fit(
        flow,
        data,
        validation=shifted,
        epochs=60,
        patience=3,
        lr=1e-2,
        progress=False,
        callback=lambda epoch, h: seen.append(evaluate_nll(flow, shifted)),
    )
    assert history.stopped == "early stopping" and history.epochs < 60
    assert history.best_epoch == min(range(history.epochs), key=history.val_nll.__getitem__)
    assert math.isclose(evaluate_nll(flow, shifted), history.best_val_nll, rel_tol=1e-6)
    assert evaluate_nll(flow, shifted) < seen[-1]  # the last epoch's state was not kept


def run(tmp: Path | None, epochs: int = 5, **kw):
    flow = small_flow(seed=3, normalization="actnorm")
    history = fit(
        flow,
        moons(600),
        epochs=epochs,
        batch_size=128,
        progress=False,
        seed=7,
        checkpoint=None if tmp is None else tmp / "ckpt.pt",
        **kw,
    )
    return flow, history


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    reference, ref_history = run(None)

    def crash(epoch, history):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, callback=crash)
    flow, history = run(tmp_path, resume=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(flow.state_dict()[key], value), key
    assert history.train_nll == ref_history.train_nll
    assert history.val_nll == ref_history.val_nll


class InterruptAfter(nn.Module):
    """Wraps a flow; raises KeyboardInterrupt at the n-th training call (mid-epoch)."""

    def __init__(self, flow: nn.Module, n: int | None) -> None:
        super().__init__()
        self.flow, self.n, self.calls = flow, n, 0
        self.input_dim, self.context_dim = flow.input_dim, flow.context_dim

    def log_prob(self, x, context=None):
        if self.training:
            self.calls += 1
            if self.n is not None and self.calls == self.n:
                raise KeyboardInterrupt
        return self.flow.log_prob(x, context)


def test_keyboard_interrupt_mid_epoch_saves_the_exact_position(tmp_path):
    def go(n, resume=False):
        torch.manual_seed(11)
        model = InterruptAfter(flows.realnvp(2, 2, (16,)), n)
        fit(
            model,
            moons(640),
            epochs=3,
            batch_size=128,
            progress=False,
            seed=5,
            checkpoint=tmp_path / "c.pt",
            resume=resume,
        )
        return model

    reference = go(None)
    (tmp_path / "c.pt").unlink()
    with pytest.raises(KeyboardInterrupt):
        go(7)  # 576 training rows = 5 batches an epoch: call 7 is epoch 1, batch 1
    saved = _checkpoint.load(tmp_path / "c.pt")
    assert saved["loop"]["epoch"] == 1 and saved["loop"]["batch"] == 1
    resumed = go(None, resume=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    _checkpoint.save_atomic({"a": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _checkpoint.save_atomic({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(_checkpoint.load(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_resume_refuses_a_checkpoint_from_another_setup(tmp_path):
    run(tmp_path, epochs=2)
    with pytest.raises(ValueError, match="was written for"):
        run(tmp_path, epochs=4, resume=True)


class NaNAfter(nn.Module):
    def __init__(self, flow: nn.Module, n: int) -> None:
        super().__init__()
        self.flow, self.n, self.calls = flow, n, 0
        self.input_dim, self.context_dim = flow.input_dim, None

    def log_prob(self, x, context=None):
        lp = self.flow.log_prob(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                return lp * float("nan")
        return lp


def test_non_finite_loss_stops_with_the_last_good_state():
    model = NaNAfter(small_flow(), n=10)  # 4 batches an epoch: call 10 is in epoch 2
    states = []
    with pytest.raises(NonFiniteLossError, match="non-finite training loss.*epoch 2") as info:
        fit(
            model,
            moons(512),
            epochs=5,
            batch_size=128,
            validation=None,
            progress=False,
            callback=lambda e, h: states.append(
                {k: v.clone() for k, v in model.state_dict().items()}
            ),
        )
    assert info.value.history.epochs == 2
    for key, value in states[-1].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("options", [{}, {"validation": None}, {"batch_size": 8}],
                         ids=["validated", "no-validation", "small-batches"])
def test_a_diverging_flow_stops_with_the_last_good_state(options):
    """lr=1e6: the flow's log density overflows float32 (Flow.log_prob raises for finite data),
    in a batch or on the validation rows; with no validation rows, the parameters after an
    epoch's last step are scored before they become the last good ones."""
    torch.manual_seed(0)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(16,))
    states = [{k: v.clone() for k, v in flow.state_dict().items()}]
    with pytest.raises(NonFiniteLossError, match="non-finite .*restored"):
        fit(flow, torch.randn(64, 2), lr=1e6, epochs=3, progress=False, compile=False,
            callback=lambda e, h: states.append(
                {k: v.clone() for k, v in flow.state_dict().items()}), **options)
    for key, value in states[-1].items():
        assert torch.equal(flow.state_dict()[key], value), key
    assert bool(torch.isfinite(flow.log_prob(torch.randn(8, 2))).all())


def test_batch_norm_gets_batches_of_two_rows_or_a_clear_error():
    """A last batch of one row has no batch statistics: its row waits for the next epoch (a
    new permutation); batch_size=1 or one training row is refused before anything changes."""
    torch.manual_seed(0)
    flow = flows.maf(2, num_transforms=2, hidden_dims=(8,), normalization="batchnorm")
    history = fit(flow, torch.randn(65, 2), batch_size=64, validation=None, epochs=2,
                  progress=False, compile=False)
    assert history.epochs == 2
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match="batch_size must be >= 2 .* batch normalisation.* got 1"):
        fit(flow, torch.randn(65, 2), batch_size=1, progress=False)
    with pytest.raises(ValueError, match="at least 2 training rows .* got 1"):
        fit(flow, torch.randn(1, 2), validation=None, progress=False)
    assert all(torch.equal(flow.state_dict()[k], v) for k, v in before.items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_named():
    with pytest.raises(ValueError, match="device 'cuda:1' is not available: .* 0 CUDA"):
        fit(small_flow(), moons(64), device="cuda:1", epochs=1, progress=False)


def test_conditional_fit_learns_the_context():
    torch.manual_seed(0)
    c = torch.randn(2048, 1) * 2
    x = torch.cat([c + 0.1 * torch.randn_like(c), torch.randn_like(c)], -1)
    flow = flows.maf(2, 3, (32,), context_dim=1)
    history = fit(flow, x, context=c, epochs=30, batch_size=256, progress=False)
    # entropy of x | c is 0.54 nats; without the context it is 3.53 nats
    assert history.best_val_nll < 1.5
    samples = flow.sample((500,), torch.tensor([[3.0]]))
    assert abs(samples[..., 0].mean() - 3.0) < 0.1


def test_progress_bar_shows_and_hides(capsys):
    fit(small_flow(), moons(256), epochs=2, progress=True)
    assert "epoch" in capsys.readouterr().err
    fit(small_flow(), moons(256), epochs=2, progress=False)
    assert capsys.readouterr().err == ""


class TestBadInput:
    def test_non_finite_rows_are_named(self):
        data = moons(100)
        data[3, 0] = float("nan")
        data[42, 1] = float("inf")
        with pytest.raises(ValueError, match=r"2 row\(s\): rows \[3, 42\]"):
            fit(small_flow(), data, progress=False)

    def test_shapes(self):
        with pytest.raises(ValueError, match="3 columns but the model's input_dim is 2"):
            fit(small_flow(), torch.zeros(10, 3), progress=False)
        with pytest.raises(ValueError, match=r"shape \(rows, features\)"):
            fit(small_flow(), torch.zeros(10), progress=False)
        with pytest.raises(ValueError, match="empty"):
            fit(small_flow(), torch.zeros(0, 2), progress=False)

    def test_context(self):
        cond = small_flow(context_dim=3)
        with pytest.raises(ValueError, match="context has 9 rows but data has 10"):
            fit(cond, torch.zeros(10, 2), context=torch.zeros(9, 3), progress=False)
        with pytest.raises(ValueError, match="pass context="):
            fit(cond, torch.zeros(10, 2), progress=False)
        with pytest.raises(ValueError, match="context_dim is 3"):
            fit(cond, torch.zeros(10, 2), context=torch.zeros(10, 2), progress=False)
        with pytest.raises(ValueError, match="unconditional"):
            fit(small_flow(), torch.zeros(10, 2), context=torch.zeros(10, 3), progress=False)

    def test_arguments(self, tmp_path):
        with pytest.raises(ValueError, match="validation fraction"):
            fit(small_flow(), moons(100), validation=1.5, progress=False)
        with pytest.raises(ValueError, match="leaves 0 validation"):
            fit(small_flow(), moons(3), validation=0.1, progress=False)
        with pytest.raises(ValueError, match="lr_schedule"):
            fit(small_flow(), moons(100), lr_schedule="step", progress=False)
        with pytest.raises(ValueError, match="resume=True needs checkpoint"):
            fit(small_flow(), moons(100), resume=True, progress=False)
        with pytest.raises(ValueError, match="epochs must be a positive int"):
            fit(small_flow(), moons(100), epochs=0, progress=False)
