"""distill: probability density distillation of a MAF teacher into an IAF student (quality on a
known teacher, the KL estimator, a frozen teacher, errors, non-finite handling, checkpoints and
exact resume, conditional flows)."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_flows import Flow, flows
from pyro_flows.infer import NonFiniteLossError
from pyro_flows.infer.distill import DistillHistory, distill, distillation_kl
from pyro_flows.transforms import ElementwiseAffine


def gaussian_teacher() -> Flow:
    """A MAF whose density is known exactly: N(loc, diag(scale^2)) via an elementwise affine
    layer after an identity-initialised MAF."""
    torch.manual_seed(0)
    maf = flows.maf(3, num_transforms=1, hidden_dims=(8,))
    for p in maf.parameters():
        torch.nn.init.zeros_(p)
    layers = [*maf.transforms, ElementwiseAffine(3, loc=[1.0, -2.0, 0.5], scale=[2.0, 0.5, 1.0])]
    return Flow(layers)


def trained_teacher(dim: int = 2) -> Flow:
    """A small MAF fitted to a banana-shaped density (non-Gaussian, correlated)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, dim, generator=g)
    z[:, 1:] = z[:, 1:] * 0.5 + 0.5 * z[:, :1] ** 2 - 0.5
    teacher = flows.maf(dim, num_transforms=2, hidden_dims=(16,))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(150):
        idx = torch.randint(0, len(z), (256,), generator=g)
        loss = -teacher.log_prob(z[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return teacher


def test_kl_estimate_matches_the_closed_form_between_gaussians():
    teacher = gaussian_teacher()
    student = Flow([ElementwiseAffine(3, loc=[0.0, 0.0, 0.0], scale=[1.0, 1.0, 1.0])])
    kl, se = distillation_kl(teacher, student, 20000)
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    # KL(N(0, 1) || N(loc, scale^2)) per dimension
    exact = float((torch.log(scale) + (1 + loc**2) / (2 * scale**2) - 0.5).sum())
    assert abs(kl - exact) < 4 * se and se < 0.1, (kl, exact, se)


def test_student_learns_a_known_gaussian_teacher():
    teacher = gaussian_teacher()
    torch.manual_seed(0)
    student = flows.iaf(3, num_transforms=1, hidden_dims=(8,))
    history = distill(teacher, student, steps=300, batch_size=128, lr=2e-2, progress=False)
    assert isinstance(history, DistillHistory)
    assert history.steps == 300 and history.stopped == "completed"
    assert history.eval_steps == [300] and history.eval_kl[-1] < 0.015  # measured 0.0065
    assert history.eval_kl_se[-1] < 0.005
    with torch.no_grad():
        draws = student.sample((20000,))
    assert torch.allclose(draws.mean(0), torch.tensor([1.0, -2.0, 0.5]), atol=0.1)
    assert torch.allclose(draws.std(0), torch.tensor([2.0, 0.5, 1.0]), rtol=0.05)


def test_distils_a_trained_maf_into_an_iaf():
    teacher = trained_teacher()
    torch.manual_seed(1)
    student = flows.iaf(2, num_transforms=2, hidden_dims=(32,))
    kl_before, _ = distillation_kl(teacher, student, 4000)
    history = distill(
        teacher, student, steps=600, batch_size=256, lr=5e-3, progress=False, eval_every=300
    )
    assert history.eval_steps == [300, 600]
    assert kl_before > 0.3
    assert history.eval_kl[-1] < 0.03, history.eval_kl
    # the per-step batch estimates go down too
    assert sum(history.kl[-50:]) / 50 < sum(history.kl[:50]) / 50 - 0.2


def test_the_teacher_is_frozen_and_restored():
    teacher = trained_teacher()
    teacher.train()
    teacher.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(1)
    student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    seen = []

    def spy(step, history):
        seen.append((teacher.training, any(p.requires_grad for p in teacher.parameters())))

    distill(teacher, student, steps=5, batch_size=32, progress=False, callback=spy)
    assert seen == [(False, False)] * 5
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())


def test_bad_arguments_are_clear_errors():
    teacher = flows.maf(2, num_transforms=1, hidden_dims=(8,))
    student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    with pytest.raises(ValueError, match="input_dim 2 but the student has input_dim 3"):
        distill(teacher, flows.iaf(3, 1, (8,)), steps=1, progress=False)
    with pytest.raises(ValueError, match="same module"):
        distill(teacher, teacher, steps=1, progress=False)
    shared = Flow([teacher.transforms[0]])
    with pytest.raises(ValueError, match="share"):
        distill(teacher, shared, steps=1, progress=False)
    with pytest.raises(TypeError, match="teacher must have log_prob"):
        distill(object(), student, steps=1, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="student must have rsample_and_log_prob"):
        distill(teacher, torch.nn.Linear(2, 2), steps=1, progress=False)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        distill(teacher, student, steps=0, progress=False)
    with pytest.raises(ValueError, match="lr must be a positive finite number, got -1.0"):
        distill(teacher, student, steps=1, lr=-1.0, progress=False)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        distill(teacher, student, steps=1, resume=True, progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        distill(teacher, student, steps=1, context=torch.zeros(4, 2), progress=False)
    conditional = flows.maf(2, num_transforms=1, hidden_dims=(8,), context_dim=3)
    with pytest.raises(ValueError, match=r"conditional \(context_dim=3\)"):
        distill(conditional, student, steps=1, progress=False)


def test_non_finite_teacher_density_restores_the_last_good_student():
    class Exploding(torch.nn.Module):
        input_dim = 2
        context_dim = None

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def log_prob(self, x):
            self.calls += 1
            lp = -0.5 * (x**2).sum(-1)
            return lp if self.calls < 60 else lp + float("nan")

    torch.manual_seed(0)
    student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    with pytest.raises(NonFiniteLossError, match="teacher's log density") as info:
        distill(Exploding(), student, steps=100, batch_size=16, progress=False)
    # the student holds the state of step 50 (last good snapshot), the history the 59 steps
    assert info.value.history.steps == 59
    assert all(math.isfinite(v) for v in info.value.history.kl)
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    def run(steps_before_stop=None, resume=False, path=None):
        teacher = trained_teacher()
        torch.manual_seed(1)
        student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))

        def stop(step, history):
            if steps_before_stop is not None and step == steps_before_stop:
                raise KeyboardInterrupt

        if resume:
            student.load_state_dict(torch.load(path, weights_only=False)["module"])
        history = distill(
            teacher,
            student,
            steps=40,
            batch_size=32,
            progress=False,
            checkpoint=path,
            checkpoint_every=10,
            resume=resume,
            eval_every=20,
            eval_samples=256,
            callback=stop if not resume else None,
        )
        return student, history

    full_student, full_history = run(path=tmp_path / "full.pt")
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(steps_before_stop=25, path=path)
    student, history = run(resume=True, path=path)
    assert history.kl == full_history.kl
    assert history.eval_kl == full_history.eval_kl
    for (k, a), b in zip(student.state_dict().items(), full_student.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="different set-up"):
        distill(trained_teacher(), student, steps=41, checkpoint=path, resume=True,
                progress=False)


def test_conditional_distillation_uses_the_context():
    torch.manual_seed(0)
    teacher = flows.maf(2, num_transforms=1, hidden_dims=(16,), context_dim=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make the teacher depend strongly on its context
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    student = flows.iaf(2, num_transforms=1, hidden_dims=(32,), context_dim=1)
    context = torch.linspace(-1, 1, 64).unsqueeze(-1)
    history = distill(
        teacher, student, steps=300, batch_size=128, lr=2e-2, context=context, progress=False
    )
    assert history.eval_kl[-1] < 0.03, history.eval_kl
    with torch.no_grad():
        x, log_q = student.rsample_and_log_prob((), context=context.repeat(32, 1))
        matched = (log_q - teacher.log_prob(x, context.repeat(32, 1))).mean()
        flipped = (log_q - teacher.log_prob(x, -context.repeat(32, 1))).mean()
    assert matched < 0.03 and flipped > 0.3, (matched, flipped)  # measured 0.013 and 0.71


def test_sampling_map_objective_learns_the_teachers_sampler():
    """The regression objective: the student's sampler becomes the teacher's (same base noise,
    same point), and the KL it reaches at equal steps is below the reverse KL's."""
    teacher = trained_teacher()
    kls = {}
    for objective in ("kl", "sampling_map"):
        torch.manual_seed(1)
        student = flows.iaf(2, num_transforms=2, hidden_dims=(32,))
        history = distill(teacher, student, steps=600, batch_size=256, lr=5e-3, progress=False,
                          objective=objective)
        assert history.objective == objective and len(history.loss) == 600
        kls[objective] = history.eval_kl[-1]
    assert kls["sampling_map"] < 0.02, kls  # measured 0.0066 (kl: 0.0080)
    assert kls["sampling_map"] < kls["kl"], kls
    # the loss is the mean squared base-space residual of the last batch
    assert history.loss[-1] < 0.05 < history.loss[0], (history.loss[0], history.loss[-1])
    eps = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        by_teacher = teacher._push(eps, None)  # the teacher's (sequential) sampler
        by_student = student._push(eps, None)
    # the typical point lands where the teacher's sampler puts it
    assert (by_student - by_teacher).norm(dim=-1).median() < 0.05


def test_sampling_map_objective_with_a_context():
    torch.manual_seed(0)
    teacher = flows.maf(2, num_transforms=1, hidden_dims=(16,), context_dim=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    student = flows.iaf(2, num_transforms=1, hidden_dims=(32,), context_dim=1)
    context = torch.linspace(-1, 1, 64).unsqueeze(-1)
    history = distill(teacher, student, steps=300, batch_size=128, lr=2e-2, context=context,
                      progress=False, objective="sampling_map")
    assert history.eval_kl[-1] < 0.03, history.eval_kl  # measured 0.004


def test_sampling_map_objective_errors(tmp_path):
    teacher = trained_teacher()
    student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    with pytest.raises(ValueError, match="objective must be one of"):
        distill(teacher, student, steps=2, progress=False, objective="forward_kl")
    normal = torch.distributions.Normal(torch.zeros(2), 2 * torch.ones(2))
    wide = Flow(list(teacher.transforms), base=torch.distributions.Independent(normal, 1))
    with pytest.raises(ValueError, match="same base distribution"):
        distill(wide, student, steps=2, progress=False, objective="sampling_map")

    class DensityOnly:
        input_dim = 2

        def log_prob(self, x):
            return teacher.log_prob(x)

    with pytest.raises(TypeError, match="teacher to be a pyro_flows.Flow"):
        distill(DensityOnly(), student, steps=2, progress=False, objective="sampling_map")
    # a density-only teacher is fine for the reverse KL
    distill(DensityOnly(), student, steps=2, progress=False, eval_samples=64)
    path = tmp_path / "run.pt"
    distill(teacher, student, steps=4, progress=False, checkpoint=path, eval_samples=64)
    with pytest.raises(ValueError, match="objective='kl'"):
        distill(teacher, student, steps=4, progress=False, checkpoint=path, resume=True,
                objective="sampling_map", eval_samples=64)


def test_distillation_kl_rejects_bad_arguments_with_distills_checks():
    """The checks of ``distill`` apply to the KL estimator too, before any draw."""
    torch.manual_seed(0)
    teacher = flows.maf(2, num_transforms=1, hidden_dims=(8,))
    student = flows.iaf(2, num_transforms=1, hidden_dims=(8,))
    for bad in (0, -5):
        with pytest.raises(ValueError, match=f"num_samples must be a positive int, got {bad}"):
            distillation_kl(teacher, student, bad)
    with pytest.raises(TypeError, match="num_samples must be a positive int"):
        distillation_kl(teacher, student, 10.5)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        distillation_kl(teacher, student, 10, batch_size=0)
    with pytest.raises(TypeError, match="teacher must have log_prob .* got object"):
        distillation_kl(object(), student, 10)
    with pytest.raises(TypeError, match="student must have rsample_and_log_prob"):
        distillation_kl(teacher, object(), 10)
    conditional_teacher = flows.maf(2, num_transforms=1, hidden_dims=(8,), context_dim=3)
    conditional_student = flows.iaf(2, num_transforms=1, hidden_dims=(8,), context_dim=3)
    with pytest.raises(ValueError, match=r"context must have shape \(rows, context_dim\), got "
                                         r"\(0, 3\)"):
        distillation_kl(conditional_teacher, conditional_student, 10, context=torch.zeros(0, 3))
    with pytest.raises(ValueError, match="conditional"):
        distillation_kl(conditional_teacher, conditional_student, 10)
    kl, se = distillation_kl(teacher, teacher, 1)  # a flow against itself, one draw: allowed
    assert abs(kl) < 1e-5 and math.isnan(se)
