#!/usr/bin/env python
"""The library's training loops against hand-written loops of the same model (issue 18).

Run from the repository root::

    python benchmarks/loops.py                        # every part, 5 repeats, 1 thread
    python benchmarks/loops.py --quick                # small sizes, 2 repeats (CI, < 60 s)
    python benchmarks/loops.py --parts fit --repeats 9 --threads 2 --json out.json
    python benchmarks/loops.py --parts target --profile   # + where our step's time goes

Three parts; each row prints as soon as it is done (median of the repeats; the contenders of
a row take turns repeat by repeat, the order rotating, every call built untimed from the same
seeds), and ``ratio`` is ours / the peer named in the header:

``fit`` -- ``pyro_flows.infer.fit`` end to end (the call, set-up included, model construction
    not) on a MAF (5 layers, hidden (64, 64)) against zuko's ``MAF`` of the same shape (the
    same parameter count) on the same rows (8 gaussians at D = 2; four independent two-moons
    pairs at D = 8; N = 8192), batch 512, lr 2e-3, the same epochs. ``fit`` runs with its
    defaults otherwise: 10% validation rows, the validation NLL (eval mode, batches of 4096)
    after every epoch, the best state kept and restored, early stopping (patience 10), a
    per-step cosine decay, clipping at norm 10 with a NaN/inf check of the norm and of the
    loss, AdamW (weight decay 0), the training NLL and a copy of the state every epoch;
    ``progress=False`` and no checkpoint. Contenders:

    - ``zuko loop``: ``_hand_loops.fit_like`` -- the same features by hand (the same split,
      validation, best state, early stopping, cosine decay, clipping, Adam), but no finiteness
      checks, no training NLL, no per-epoch state copy. The ratio's peer (target <= 0.8).
    - ``zuko bare``: shuffle + Adam on the same training rows, nothing else (the floor).
    - ``hand loop, ours``: ``fit_like`` on our MAF: ``fit() / this`` is the loop's overhead,
      ``this / zuko loop`` the flow's own speed.

    The time per epoch is compared (the same as the run's when both run every epoch; early
    stopping may end either run sooner).

``svi`` -- one ``SVI.step`` (``Trace_ELBO``, ``pyro.optim.Adam`` lr 0.01) of
    ``pyro_flows.infer.AutoFlow`` with its defaults (5 IAF layers of hidden (32, 32) at D = 10,
    the Gaussian start at the first call, whitening) against Pyro's ``AutoIAFNormal`` on a
    10-D Bayesian logistic regression with 200 rows. After warm-up steps (for AutoFlow these
    include its Gaussian start, timed separately and printed), each repeat times a run of
    steps; the per-step mean is reported. The ratio's peer is ``AutoIAFNormal`` of the same
    shape (``num_transforms`` and ``hidden_dim`` set to AutoFlow's; target <= 1.0); the one
    with Pyro's defaults (1 layer, hidden 3 D + 1) is shown too. The model's logits
    broadcast over vectorized particles, so AutoFlow's Gaussian start is accepted and the row
    times what its defaults give a user: 5 IAF layers, the tail stage (sinh-arcsinh and
    Tukey h), a trainable location-scale step, the frozen whitening and anchor (21 trained
    parameter tensors and 3 frozen ones against AutoIAFNormal's 30: each MADE layer keeps its
    weight and bias in one tensor, ``pyro_flows.nn.packed_linear``; ``--profile`` shows the
    optimizer's per-tensor Adam steps as the largest share of either step). ``ours,
    tail_stage=False`` is the same guide
    without the tail stage (its price; not the ratio's numerator). A model whose ``X @ w``
    does not broadcast gets its start refused and no tail stage (AutoFlow's docstring).

``target`` -- one step of ``pyro_flows.infer.fit_target(method="reverse_kl")`` (its defaults:
    batch 256, lr 3e-3, clipping at 10 with the NaN/inf checks, cosine decay, the ELBO
    recorded, a state snapshot every 50 steps; ``progress=False``, ``check_modes=False``; its
    importance-sampling evaluations fall outside the timed steps) on our IAF or RealNVP
    (5 layers, hidden (64, 64)) and the banana target at D = 2 and 10, against hand loops of
    ``rsample_and_log_prob`` (Pyro: ``rsample`` then ``log_prob``, a cache hit), the
    reverse-KL loss and a bare Adam step: zuko's inverted MAF (an IAF) or ``RealNVP``, and
    Pyro's ``AffineAutoregressive`` or ``affine_coupling`` stack. Per-step time is the mean
    interval between step timestamps (``fit_target``'s ``callback``) after 5 warm-up steps.
    The ratio's peer is the faster of zuko and Pyro (target <= 0.7); ``hand loop, ours`` is
    the same bare loop on our flow.

``--profile`` adds, for ``fit`` and ``target``, torch.profiler's top operators and cProfile's
top Python functions of our loop and of the zuko loop, and ablations of ``fit`` /
``fit_target`` options (``benchmarks/_loops_profile.py``). Compare ratios from one run only; on
a shared machine keep ``--threads 1`` (the default here; ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _hand_loops as hand  # noqa: E402
import _timing  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from _peers import pyro_affine_coupling, pyro_autoregressive, zuko, zuko_flow  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from pyro.infer.autoguide import AutoIAFNormal  # noqa: E402

from pyro_flows import flows  # noqa: E402
from pyro_flows.data import TOYS  # noqa: E402
from pyro_flows.infer import AutoFlow, fit, fit_target  # noqa: E402
from pyro_flows.targets import get_target  # noqa: E402

PARTS = ("fit", "svi", "target")
TARGETS = {"fit": 0.8, "svi": 1.0, "target": 0.7}  # the goals for the ratio
#: the SVI part's warm guides, kept for ``--profile``
GUIDES: dict[str, Any] = {}
#: a contender: called with a size (epochs or steps), returns seconds per unit (epoch or step)
Contender = Callable[[int], float]


@dataclass
class Settings:
    parts: list[str]
    repeats: int
    seed: int
    layers: int
    hidden: tuple[int, ...]
    fit_dims: list[int]
    rows: int
    epochs: int
    batch: int
    svi_dim: int
    svi_rows: int
    svi_steps: int
    target_dims: list[int]
    target_steps: int
    quick: bool


@dataclass
class Row:
    part: str
    label: str
    unit: str  # what one timed unit is ("epoch", "step")
    peer: str  # the contender the ratio divides by ("best peer": the faster of several)
    times: dict[str, list[float] | None] = field(default_factory=dict)  # s/unit per repeat
    info: dict[str, Any] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        t = self.times.get(name)
        return statistics.median(t) if t else None

    @property
    def peer_name(self) -> str | None:
        """The contender behind ``ratio``: ``peer``, or the fastest of ``info['peers']``."""
        if self.peer != "best peer":
            return self.peer if self.median(self.peer) else None
        timed = [(self.median(p), p) for p in self.info["peers"] if self.median(p)]
        return min(timed)[1] if timed else None

    @property
    def ratio(self) -> float | None:
        name = self.peer_name
        return None if name is None else self.median("ours") / self.median(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "part": self.part, "row": self.label, "unit": self.unit, "peer": self.peer_name,
            "times_s": self.times, "median_s": {k: self.median(k) for k in self.times},
            "best_s": {k: min(t) if t else None for k, t in self.times.items()},
            "ratio": self.ratio, "target": TARGETS[self.part], "info": self.info,
        }


# -- timing ---------------------------------------------------------------------------------------
def interleave(contenders: dict[str, Contender | None], size: int, warm: int,
               repeats: int) -> dict[str, list[float] | None]:
    """One untimed call of size ``warm`` each, then ``repeats`` rounds of one call each (the
    order rotating); ``None`` contenders (a missing peer) stay ``None``."""
    names = [n for n, c in contenders.items() if c is not None]
    for n in names:
        contenders[n](warm)  # type: ignore[misc]
    times: dict[str, list[float] | None] = {n: (None if c is None else [])
                                           for n, c in contenders.items()}
    for r in range(repeats):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            times[n].append(contenders[n](size))  # type: ignore[union-attr,misc]
    return times


def params_of(module: Any) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- part 1: fit() end to end ---------------------------------------------------------------------
def fit_data(D: int, n: int, seed: int) -> torch.Tensor:
    """8 gaussians at D = 2; ``D / 2`` independent two-moons pairs otherwise (seeded)."""
    g = torch.Generator().manual_seed(seed)
    if D == 2:
        return TOYS["8gaussians"](n, generator=g)
    if D % 2:
        raise ValueError(f"--fit-dims must be 2 or even, got {D}")
    return torch.cat([TOYS["moons"](n, generator=g) for _ in range(D // 2)], dim=1)


def fit_contenders(D: int, s: Settings) -> tuple[dict[str, Contender | None], dict[str, Any]]:
    x = fit_data(D, s.rows, s.seed)
    shape = dict(num_transforms=s.layers, hidden_dims=s.hidden)
    common = dict(batch_size=s.batch, lr=2e-3, seed=s.seed)

    def ours_fit(epochs: int) -> float:
        torch.manual_seed(s.seed)
        flow = flows.maf(D, **shape)
        start = time.perf_counter()
        history = fit(flow, x, epochs=epochs, progress=False, **common)
        return (time.perf_counter() - start) / history.epochs

    def by_hand(make: Callable[[], Any], log_prob: Callable[[Any], Any],
                loop: Callable) -> Contender:
        def run(epochs: int) -> float:
            torch.manual_seed(s.seed)
            model = make()
            start = time.perf_counter()
            ran = loop(model, log_prob(model), x, epochs=epochs, **common)
            return (time.perf_counter() - start) / ran
        return run

    ours = lambda: flows.maf(D, **shape)  # noqa: E731
    ours_lp = lambda f: f.log_prob  # noqa: E731
    info: dict[str, Any] = {"params_ours": params_of(ours()), "D": D}
    contenders: dict[str, Contender | None] = {"ours": ours_fit}
    if zuko is not None:
        zmake = lambda: zuko_flow("maf", D, s.layers, s.hidden)  # noqa: E731
        zuko_lp = lambda f: (lambda v: f().log_prob(v))  # noqa: E731
        contenders["zuko loop"] = by_hand(zmake, zuko_lp, hand.fit_like)
        contenders["zuko bare"] = by_hand(zmake, zuko_lp, hand.bare_fit)
        info["params_zuko"] = params_of(zmake())
    else:
        contenders["zuko loop"] = contenders["zuko bare"] = None
    contenders["hand loop, ours"] = by_hand(ours, ours_lp, hand.fit_like)
    return contenders, info


def part_fit(s: Settings, show: Callable[[Row], None]) -> list[Row]:
    rows = []
    for D in s.fit_dims:
        contenders, info = fit_contenders(D, s)
        label = f"fit maf({D}) N={s.rows} B={s.batch} E={s.epochs}"
        row = Row("fit", label, "epoch", "zuko loop", info=info)
        row.times = interleave(contenders, s.epochs, 1, s.repeats)
        show(row)
        rows.append(row)
    return rows


# -- part 2: SVI steps ----------------------------------------------------------------------------
class GuideRun:
    """One guide with its own param store (``ParamStoreDict.scope``), its SVI, and the time of
    its first step (AutoFlow's Gaussian start happens there)."""

    def __init__(self, make_guide: Callable[[Any], Any], model: Any, args: tuple, seed: int):
        self.model, self.args, self.state = model, args, None
        self.first_step_s: float | None = None
        pyro.set_rng_seed(seed)
        with pyro.get_param_store().scope() as state:
            self.guide = make_guide(model)
            self.svi = SVI(model, self.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        self.state = state

    def __call__(self, steps: int) -> float:
        with pyro.get_param_store().scope(self.state):
            if self.first_step_s is None:
                self.first_step_s = _timing.time_once(lambda: self.svi.step(*self.args))
            start = time.perf_counter()
            for _ in range(steps):
                self.svi.step(*self.args)
            return (time.perf_counter() - start) / steps

    @property
    def params(self) -> int:
        return sum(v.numel() for v in self.state["params"].values())  # type: ignore[index]


def part_svi(s: Settings, show: Callable[[Row], None]) -> list[Row]:
    model, X, y = hand.logistic_regression(s.svi_dim, s.svi_rows, s.seed)
    hidden = list(autoflow_hidden(s.svi_dim))
    runs = {
        "ours": GuideRun(AutoFlow, model, (X, y), s.seed),
        "ours, tail_stage=False": GuideRun(lambda m: AutoFlow(m, tail_stage=False), model,
                                           (X, y), s.seed),
        "AutoIAFNormal same shape": GuideRun(
            lambda m: AutoIAFNormal(m, hidden_dim=hidden, num_transforms=DEFAULT_IAF_LAYERS),
            model, (X, y), s.seed,
        ),
        "AutoIAFNormal defaults": GuideRun(AutoIAFNormal, model, (X, y), s.seed),
    }
    label = f"svi step, logistic regression D={s.svi_dim} N={s.svi_rows}, AutoFlow defaults"
    row = Row("svi", label, "step", "AutoIAFNormal same shape")
    row.times = interleave(dict(runs), s.svi_steps, 3, s.repeats)  # type: ignore[arg-type]
    row.label += f" ({guide_state(runs['ours'].guide)})"
    row.info = {name: {"params": r.params, "first_step_s": r.first_step_s}
                for name, r in runs.items()}
    row.info["shape"] = {"layers": DEFAULT_IAF_LAYERS, "hidden": hidden}
    GUIDES.update(runs)  # for --profile
    show(row)
    return [row]


def guide_state(guide: Any) -> str:
    """What the timed AutoFlow holds: whether its Gaussian start was accepted, whether the
    tail stage is on (the label says what the row times)."""
    start = guide.start_result
    names = {type(t).__name__ for t in guide.flow.transforms}
    return (f"start {'accepted' if start is not None and start.accepted else 'refused'}, "
            f"tail stage {'on' if 'TukeyH' in names else 'off'}")


#: ``flows.iaf``'s default depth, which ``AutoFlow(flow="iaf")`` keeps
DEFAULT_IAF_LAYERS = 5


def autoflow_hidden(D: int) -> tuple[int, int]:
    """AutoFlow's default hidden widths for a named builder, ``(w, w)``, ``w = max(32, 2D+2)``."""
    w = max(32, 2 * D + 2)
    return (w, w)


# -- part 3: fit_target steps ---------------------------------------------------------------------
def target_contenders(kind: str, D: int, s: Settings) -> tuple[dict[str, Contender | None], dict]:
    target = get_target("banana", dim=D)
    shape = dict(num_transforms=s.layers, hidden_dims=s.hidden)
    make_ours = lambda: getattr(flows, kind)(D, **shape)  # noqa: E731
    skip, batch, lr = 5, 256, 3e-3

    def ours(steps: int) -> float:
        torch.manual_seed(s.seed)
        flow = make_ours()
        stamps: list[float] = []
        with warnings.catch_warnings():  # a k-hat warning of an under-trained flow: no matter
            warnings.simplefilter("ignore", UserWarning)
            fit_target(flow, target, steps=steps, method="reverse_kl", check_modes=False,
                       progress=False, seed=s.seed, callback=lambda *_: stamps.append(
                           time.perf_counter()))
        return hand.per_step(stamps, skip)

    def bare(make: Callable[[], tuple[Any, Any]]) -> Contender:
        def run(steps: int) -> float:
            torch.manual_seed(s.seed)
            draw, params = make()
            stamps = hand.reverse_kl_loop(draw, target.log_prob, params, steps=steps,
                                          batch_size=batch, lr=lr)
            return hand.per_step(stamps, skip)
        return run

    def our_draw() -> tuple[Any, Any]:
        flow = make_ours()
        return (lambda b: flow.rsample_and_log_prob((b,))), flow.parameters()

    def zuko_draw() -> tuple[Any, Any]:
        zf = zuko_flow("iaf" if kind == "iaf" else "realnvp", D, s.layers, s.hidden)
        return (lambda b: zf().rsample_and_log_prob((b,))), zf.parameters()

    def pyro_draw() -> tuple[Any, Any]:
        if kind == "iaf":
            d, mods = pyro_autoregressive(D, s.layers, s.hidden, invert=False)
        else:
            d, mods = pyro_affine_coupling(D, s.layers, s.hidden)

        def draw(b: int) -> tuple[Any, Any]:
            x = d.rsample((b,))
            return x, d.log_prob(x)

        return draw, mods.parameters()

    contenders: dict[str, Contender | None] = {
        "ours": ours,
        "hand loop, ours": bare(our_draw),
        "zuko": None if zuko is None else bare(zuko_draw),
        "pyro": bare(pyro_draw),
    }
    info = {"params_ours": params_of(make_ours()), "peers": ["zuko", "pyro"], "D": D,
            "kind": kind}
    return contenders, info


def part_target(s: Settings, show: Callable[[Row], None]) -> list[Row]:
    rows = []
    for D in s.target_dims:
        for kind in ("iaf", "realnvp"):
            contenders, info = target_contenders(kind, D, s)
            row = Row("target", f"fit_target {kind}({D}) banana B=256", "step", "best peer",
                      info=info)
            row.times = interleave(contenders, s.target_steps, 10, s.repeats)
            show(row)
            rows.append(row)
    return rows


# -- output ---------------------------------------------------------------------------------------
def show_row(row: Row) -> None:
    """One row, as soon as it is done: every contender's median ms per unit and the ratio."""
    cells = [f"{name} {_timing.fmt_ms(row.median(name)) if t else 'n/a'}"
             for name, t in row.times.items()]
    ratio = row.ratio
    goal = TARGETS[row.part]
    verdict = "-" if ratio is None else f"{ratio:.2f}" + (" ok" if ratio <= goal else " MISSED")
    print(f"{row.label}: ms/{row.unit}: " + "  ".join(cells), flush=True)
    extra = ""
    if row.part == "fit":
        base = row.median("hand loop, ours")
        if base:
            extra = f"; fit()/hand loop on ours = {row.median('ours') / base:.2f}"
        bare = row.median("zuko bare")
        if bare:
            extra += f"; ours/zuko bare = {row.median('ours') / bare:.2f}"
    elif row.part == "target":
        base = row.median("hand loop, ours")
        if base:
            extra = f"; fit_target/hand loop on ours = {row.median('ours') / base:.2f}"
    elif row.part == "svi":
        dflt = row.median("AutoIAFNormal defaults")
        if dflt:
            extra = f"; ours/AutoIAFNormal defaults = {row.median('ours') / dflt:.2f}"
    print(f"    ratio ours/{row.peer_name or row.peer} = {verdict} (target <= {goal}){extra}",
          flush=True)


def settings_from(a: argparse.Namespace) -> Settings:
    q = a.quick
    return Settings(
        parts=a.parts, repeats=a.repeats or (2 if q else 5), seed=a.seed, layers=5,
        hidden=(64, 64), fit_dims=a.fit_dims or ([2] if q else [2, 8]),
        rows=a.rows or (1024 if q else 8192), epochs=a.epochs or (2 if q else 20), batch=512,
        svi_dim=10, svi_rows=200, svi_steps=a.svi_steps or (10 if q else 100),
        target_dims=a.target_dims or ([2] if q else [2, 10]),
        target_steps=a.target_steps or (30 if q else 200), quick=q,
    )


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--repeats", type=positive, default=None, help="timed repeats (5; quick 2)")
    p.add_argument("--threads", type=positive, default=1, help="torch threads (1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-dims", type=positive, nargs="+", default=None, help="(2 8)")
    p.add_argument("--rows", type=positive, default=None, help="fit rows N (8192)")
    p.add_argument("--epochs", type=positive, default=None, help="fit epochs (20)")
    p.add_argument("--svi-steps", type=positive, default=None, help="SVI steps per repeat (100)")
    p.add_argument("--target-dims", type=positive, nargs="+", default=None, help="(2 10)")
    p.add_argument("--target-steps", type=positive, default=None, help="steps per repeat (200)")
    p.add_argument("--profile", action="store_true", help="profile our fit / fit_target steps")
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (CI smoke run)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    threads = _timing.set_threads(a.threads)
    s = settings_from(a)
    env = _timing.environment(threads, "pyro", "zuko")
    v, load = env["versions"], env.get("load_avg")
    print(f"torch {v['torch']}  pyro {v['pyro']}  zuko {v['zuko'] or 'not installed'}  "
          f"python {env['python']}")
    print(f"cores {env['cores']}  torch threads {threads}"
          + (f"  load avg {load[0]:.1f}" if load else "")
          + f"  repeats {s.repeats} (median)" + ("  [quick]" if s.quick else ""), flush=True)
    if zuko is None:
        print("note: zuko is not installed (pip install 'pyro-flows[bench]'): its columns "
              "read n/a", flush=True)
    runners = {"fit": part_fit, "svi": part_svi, "target": part_target}
    rows: list[Row] = []
    for part in s.parts:
        print(f"\n== {part} ==", flush=True)
        rows += runners[part](s, show_row)
    if a.profile:
        import _loops_profile

        _loops_profile.run(s, fit_data, flows, GUIDES)
    missed = [r.label for r in rows if r.ratio is not None and r.ratio > TARGETS[r.part]]
    print(f"\nratio = ours / peer; targets: fit <= 0.8, svi <= 1.0, target <= 0.7; "
          f"missed: {len(missed)} of {len(rows)} row(s)", flush=True)
    if a.json:
        _timing.write_json(a.json, {"environment": env, "settings": s,
                                    "rows": [r.as_dict() for r in rows]})
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
