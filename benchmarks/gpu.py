#!/usr/bin/env python
"""Run every flow builder and inference entry point on a device (a GPU by default), then time
training steps there against zuko and Pyro.

Run from the repository root::

    python benchmarks/gpu.py                         # cuda: D = 16, 64 x N = 4096, 65536
    python benchmarks/gpu.py --quick                 # D = 16, N = 4096, 2 repeats
    python benchmarks/gpu.py --quick --device cpu    # anywhere (CI), a minute or two
    python benchmarks/gpu.py --smoke-only            # only the PASS/FAIL checks

**Smoke checks**: every builder of :mod:`pyro_flows.flows` (sample, log_prob, backward) and every
entry point (``fit``, ``fit_target``, ``nuts``, ``hmc``, ``mala``, ``ula``,
``random_walk_metropolis``, ``importance_sample``, ``neutra``, ``AutoFlow`` SVI steps,
``AmortizedFlow``, ``guide_psis_khat``) runs on the device with its inputs there; a row passes
when it completes, its numbers are finite and its tensors are on the device. One line per row,
``PASS``/``FAIL``, printed as it finishes.

**Timings**: one Adam training step (``-log_prob(x).mean()``, backward, step) on a batch of ``N``
points of dimension ``D``, for MAF, RealNVP (affine coupling) and NSF (autoregressive splines),
5 layers of hidden sizes (64, 64): ours, zuko's ``MAF`` / ``RealNVP`` / ``NSF`` (zuko builds a
fresh distribution per call), and Pyro's ``AffineAutoregressive`` / ``affine_coupling`` /
``spline_autoregressive`` with a fresh ``TransformedDistribution`` per step (as a Pyro guide
does). Medians of interleaved repeats (``_timing.time_side_by_side``), with
``torch.cuda.synchronize()`` around every timed call on CUDA; ``ratio = ours / peer`` (below 1:
ours is faster). Rows are printed as they finish. Exit status 1 when a smoke check failed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _timing  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
from _peers import (  # noqa: E402
    pyro_affine_coupling,
    pyro_autoregressive,
    pyro_spline_autoregressive,
    zuko,
    zuko_flow,
    zuko_nsf,
)

from pyro_flows import flows  # noqa: E402
from pyro_flows import infer as pf_infer  # noqa: E402
from pyro_flows.targets import Funnel  # noqa: E402

LAYERS, HIDDEN = 5, (64, 64)


# ------------------------------------------------------------------------------------------
# smoke checks
# ------------------------------------------------------------------------------------------
def _on(device: torch.device, *tensors: Tensor) -> None:
    """Every tensor on ``device`` (``cuda`` and ``cuda:0`` count as one) and finite."""
    for t in tensors:
        same = t.device.type == device.type and (
            device.index is None or t.device.index in (None, device.index)
        )
        if not same:
            raise AssertionError(f"a result of shape {tuple(t.shape)} is on {t.device}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AssertionError(f"a result of shape {tuple(t.shape)} has non-finite values")


def _finite(*values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise AssertionError(f"non-finite value {v}")


def _builder_configs() -> dict[str, dict[str, Any]]:
    """Small arguments for every builder of ``pyro_flows.flows`` (vectors: D = 3; images:
    2 x 4 x 4)."""
    image = (2, 4, 4)
    small = {"num_transforms": 2, "hidden_dims": (16,)}
    return {
        "nice": {"input_dim": 3, **small},
        "realnvp": {"input_dim": 3, **small},
        "maf": {"input_dim": 3, **small},
        "iaf": {"input_dim": 3, **small},
        "nsf": {"input_dim": 3, **small},
        "planar": {"input_dim": 3, "num_transforms": 2},
        "radial": {"input_dim": 3, "num_transforms": 2},
        "glow": {"shape": image, "num_transforms": 1, "hidden_channels": 8},
        "realnvp_image": {"shape": image, "num_transforms": 1, "hidden_channels": 8},
        "mintnet": {"shape": image, "num_transforms": 1, "hidden_per_channel": 2},
        "idf": {"shape": image, "num_transforms": 1, "hidden_channels": 8},
        "cnf": {"input_dim": 3, "hidden_dims": (16,)},
        "gaussianization": {"input_dim": 3, "num_transforms": 2},
    }


def smoke_builder(name: str, device: torch.device) -> str:
    """Build on the CPU, move with ``.to(device)``, sample, score, back-propagate."""
    torch.manual_seed(0)
    # a builder without an entry (a new family) runs small at its defaults: D = 3, two layers
    config = _builder_configs().get(name, {"input_dim": 3, "num_transforms": 2})
    flow = flows.get_builder(name)(**config).to(device)
    with torch.no_grad():
        x = flow.sample((8,))
    log_q = flow.log_prob(x)
    params = [p for p in flow.parameters() if p.requires_grad]
    if params:
        (-log_q.mean()).backward()
        _on(device, *(p.grad for p in params if p.grad is not None))
    _on(device, x, log_q)
    return f"x {tuple(x.shape)}"


def _target(device: torch.device) -> Funnel:
    return Funnel(dim=3).to(device)


def _flow(device: torch.device, dim: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return flows.realnvp(dim, num_transforms=2, hidden_dims=(16,)).to(device)


def _model(y: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), device=y.device), 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _autoflow(device: torch.device) -> tuple[Any, Tensor]:
    pyro.clear_param_store()
    y = torch.tensor([0.3, -0.5, 1.2], device=device)
    guide = pf_infer.AutoFlow(_model, num_transforms=1, hidden_dims=(8,))
    svi = pyro.infer.SVI(_model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    losses = [svi.step(y) for _ in range(5)]
    _finite(*losses)
    return guide, y


def smoke_entry(name: str, device: torch.device, quick: bool) -> str:
    """One entry point on ``device`` with small sizes; returns a short description."""
    n = 20 if quick else 100
    if name in ("nuts", "hmc", "mala", "ula", "random_walk_metropolis"):
        run = getattr(pf_infer, name)
        chains = 1 if name in ("nuts", "hmc") else 4
        r = run(_target(device), num_samples=n, warmup=n, num_chains=chains, progress=False,
                seed=0)
        _on(device, r.samples)
        return f"samples {tuple(r.samples.shape)}, ess {r.diagnostics()['ess']:.1f}"
    if name == "importance_sample":
        r = pf_infer.importance_sample(_flow(device), _target(device), num_samples=10 * n, seed=0,
                                     warn=False)
        _on(device, r.samples, r.log_weights)
        _finite(r.extra["log_Z_hat"])
        return f"ess fraction {r.extra['ess_fraction']:.2f}"
    if name == "neutra":
        r = pf_infer.neutra(_flow(device), _target(device), num_samples=n, warmup=n,
                            num_chains=1, progress=False)
        _on(device, r.samples)
        return f"samples {tuple(r.samples.shape)}"
    if name == "fit":
        flow = _flow(device, 2)
        data = torch.randn(256, 2, device=device)
        h = pf_infer.fit(flow, data, epochs=2, batch_size=64, progress=False)
        _finite(*h.train_nll)
        _on(device, *flow.parameters())
        return f"train nll {h.train_nll[-1]:.3f}"
    if name == "fit_target":
        flow = _flow(device)
        h = pf_infer.fit_target(flow, _target(device), steps=n, batch_size=64, eval_samples=256,
                                progress=False)
        _finite(*h.elbo, *h.log_Z)
        _on(device, *flow.parameters())
        return f"elbo {h.elbo[-1]:.3f}"
    if name == "AutoFlow SVI":
        guide, y = _autoflow(device)
        draws = guide.sample_posterior(16, y)
        _on(device, *draws.values())
        return "5 SVI steps"
    if name == "guide_psis_khat":
        guide, y = _autoflow(device)
        k = pf_infer.guide_psis_khat(_model, guide, y, num_samples=200)
        if math.isnan(k):
            raise AssertionError("k-hat is NaN")
        return f"k-hat {k:.2f}"
    if name == "AmortizedFlow":
        torch.manual_seed(0)
        posterior = pf_infer.AmortizedFlow(2, context_dim=3, hidden_dims=(8,)).to(device)
        loc, scale = torch.zeros(5, 2, device=device), torch.ones(5, 2, device=device)
        d = posterior(loc, scale, torch.randn(5, 3, device=device))
        z = d.rsample()
        log_q = d.log_prob(z)
        log_q.sum().backward()
        _on(device, z, log_q)
        return f"z {tuple(z.shape)}"
    raise ValueError(f"unknown entry point {name!r}")


ENTRY_POINTS = (
    "fit",
    "fit_target",
    "nuts",
    "hmc",
    "mala",
    "ula",
    "random_walk_metropolis",
    "importance_sample",
    "neutra",
    "AutoFlow SVI",
    "AmortizedFlow",
    "guide_psis_khat",
)


def run_smoke(device: torch.device, quick: bool, verbose: bool) -> int:
    """Print one PASS/FAIL line per builder and entry point; return the number of failures."""
    rows: list[tuple[str, Callable[[], str]]] = [
        (f"builder {name}", lambda name=name: smoke_builder(name, device))
        for name in flows.BUILDERS
    ]
    rows += [(name, lambda name=name: smoke_entry(name, device, quick)) for name in ENTRY_POINTS]
    failed = 0
    width = max(len(label) for label, _ in rows)
    for label, check in rows:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detail = check()
            status = "PASS"
        except Exception as exc:  # noqa: BLE001 - every failure is a row of the report
            failed += 1
            status, detail = "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if verbose:
                traceback.print_exc()
        seconds = time.perf_counter() - start
        print(f"{status}  {label.ljust(width)}  {seconds:6.2f} s  {detail}", flush=True)
    print(f"smoke: {len(rows) - failed} passed, {failed} failed on {device}", flush=True)
    return failed


# ------------------------------------------------------------------------------------------
# timings
# ------------------------------------------------------------------------------------------
def _adam_step(params: Sequence[nn.Parameter], loss_of: Callable[[Tensor], Tensor], x: Tensor):
    """One training step: ``loss_of(x)``, backward, Adam. A fresh ``x`` per call, so that
    Pyro's one-entry transform cache (keyed on identity) never hands back the previous call's
    result."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_of(x.clone()).backward()
        opt.step()

    return step


def _ours(kind: str, D: int, device: torch.device) -> nn.Module:
    build = {"maf": flows.maf, "realnvp": flows.realnvp, "nsf": flows.nsf}[kind]
    return build(D, num_transforms=LAYERS, hidden_dims=HIDDEN).to(device)


def _zuko(kind: str, D: int, device: torch.device) -> nn.Module | None:
    if zuko is None:
        return None
    if kind == "nsf":
        return zuko_nsf(D, LAYERS, HIDDEN).to(device)
    return zuko_flow(kind, D, LAYERS, HIDDEN).to(device)


def _pyro(kind: str, D: int, device: torch.device) -> tuple[Any, nn.ModuleList]:
    """Pyro's stack built with ``device`` as the default device (its ``Permute`` indices and base
    live there too); ``(template distribution, modules)``."""
    with torch.device(device):
        if kind == "maf":
            return pyro_autoregressive(D, LAYERS, HIDDEN, invert=True)
        if kind == "realnvp":
            return pyro_affine_coupling(D, LAYERS, HIDDEN)
        return pyro_spline_autoregressive(D, LAYERS, HIDDEN)


def timing_contenders(
    kind: str, D: int, N: int, device: torch.device
) -> tuple[dict[str, Callable[[], None]], list[str]]:
    """The training step of ours and each peer that can be built, and notes on the others."""
    x = torch.randn(N, D, device=device)
    ours = _ours(kind, D, device)
    steps = {"ours": _adam_step(list(ours.parameters()), lambda v: -ours.log_prob(v).mean(), x)}
    notes: list[str] = []
    zf = _zuko(kind, D, device)
    if zf is not None:
        steps["zuko"] = _adam_step(list(zf.parameters()), lambda v: -zf().log_prob(v).mean(), x)
    else:
        notes.append("zuko not installed")
    try:
        template, modules = _pyro(kind, D, device)
    except ValueError as exc:  # AutoRegressiveNN needs hidden sizes >= D
        notes.append(f"pyro: {exc}")
    else:

        def pyro_loss(v: Tensor) -> Tensor:
            fresh = dist.TransformedDistribution(template.base_dist, template.transforms)
            return -fresh.log_prob(v).mean()

        steps["pyro"] = _adam_step(list(modules.parameters()), pyro_loss, x)
    return steps, notes


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:9.2f} ms"


def run_timings(
    device: torch.device, kinds: Sequence[str], dims: Sequence[int], sizes: Sequence[int],
    repeats: int, warmup: int,
) -> list[dict[str, Any]]:
    """Time each (kind, D, N) row and print it as it finishes."""
    print(
        f"training step (Adam), {LAYERS} layers, hidden {HIDDEN}; median of {repeats} after "
        f"{warmup} warm-up; ratio = ours / peer",
        flush=True,
    )
    rows = []
    for kind in kinds:
        for D in dims:
            for N in sizes:
                _timing.seed_all(0)
                try:
                    steps, notes = timing_contenders(kind, D, N, device)
                    timings = _timing.time_side_by_side(steps, repeats, warmup)
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory: report, go on
                    print(f"train {kind:8s} D={D:<3d} N={N:<6d} error: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}", flush=True)
                    continue
                med = {name: t.median for name, t in timings.items()}
                ours = med["ours"]
                cells = [f"ours {_ms(ours)}"]
                for peer in ("zuko", "pyro"):
                    if peer in med:
                        cells.append(f"{peer} {_ms(med[peer])} (ratio {ours / med[peer]:.2f})")
                    else:
                        cells.append(f"{peer} n/a")
                print(f"train {kind:8s} D={D:<3d} N={N:<6d} " + "  ".join(cells)
                      + "".join(f"  [{n}]" for n in notes), flush=True)
                rows.append({"kind": kind, "D": D, "N": N, "ms": {k: v * 1e3 for k, v in
                                                                   med.items()}})
    return rows


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="device to run on (default: cuda)")
    p.add_argument("--quick", action="store_true", help="D = 16, N = 4096, 2 repeats")
    p.add_argument("--smoke-only", action="store_true", help="only the PASS/FAIL checks")
    p.add_argument("--timings-only", action="store_true", help="skip the smoke checks")
    p.add_argument("--kinds", nargs="+", default=["maf", "realnvp", "nsf"],
                   choices=["maf", "realnvp", "nsf"], help="flows to time")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="D (16 64)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="N (4096 65536)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (5; quick: 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (2; quick: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (all cores)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON")
    p.add_argument("--verbose", action="store_true", help="tracebacks of failed smoke checks")
    return p.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    """The device, or a clear exit when it is not there."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name!r} is not a device torch knows") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but CUDA is not available here (try --device cpu)")
    return device


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    device = resolve_device(a.device)
    threads = _timing.set_threads(a.threads)
    env = _timing.environment(threads, "pyro", "zuko")
    v = env["versions"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else env["processor"]
    print(f"device {device} ({name})  torch {v['torch']}  pyro {v['pyro']}  "
          f"zuko {v['zuko'] or 'not installed'}  torch threads {threads}", flush=True)
    failed = 0
    if not a.timings_only:
        failed = run_smoke(device, a.quick, a.verbose)
    rows: list[dict[str, Any]] = []
    if not a.smoke_only:
        print(flush=True)
        rows = run_timings(
            device,
            a.kinds,
            a.dims or ([16] if a.quick else [16, 64]),
            a.sizes or ([4096] if a.quick else [4096, 65536]),
            a.repeats or (2 if a.quick else 5),
            a.warmup if a.warmup is not None else (1 if a.quick else 2),
        )
    if a.json:
        _timing.write_json(a.json, {"environment": env, "device": str(device),
                                    "smoke_failed": failed, "rows": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
