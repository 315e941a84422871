r"""When :func:`~pyro_flows.infer.fit_guide` calls a fitted guide unreliable: one rule from its
plain PSIS check and, for :class:`~pyro_flows.infer.AutoFlow`, a defensive one.

Two checks of a fitted guide :math:`q` against the posterior :math:`p` are available
(:mod:`~pyro_flows.infer.guide_check`, :mod:`~pyro_flows.infer.defensive_draws`):

- the **plain** check: PSIS :math:`\hat k` of :math:`\log p/q` from the guide's own draws
  (Yao et al., 2018), and the guide's moments against the PSIS-weighted ones;
- the **defensive** check (AutoFlow only; separate draws): the guide's moments against those
  weighted by :math:`p/m`, :math:`m = \tfrac12 q + \tfrac12 q_s` with :math:`q_s` the guide with
  its base widened twofold, and the :math:`\hat k_m` of those weights.

Each sees what the other cannot. A guide whose tails are too light keeps a small plain
:math:`\hat k` when its own draws never reach the posterior's tail (posteriordb's one_comp:
:math:`\hat k` 0.41 at sds 0.48 of the reference), while the wide component's draws do reach it.
Conversely a plain :math:`\hat k` above 0.7 is a statement about importance sampling from
:math:`q` (a few draws with large ratios), not always about the guide's moments: where the
defensive weights are reliable and agree with the guide's moments within the limits by two of
their standard errors (``GuideCheck.confirmed``), the moments are fine.

The rule (:func:`judge_guide`), with ``plain`` and ``defensive`` the two checks:

1. ``"khat"``: plain :math:`\hat k > 0.7`, unless the defensive check confirms the moments;
2. ``"tails"``: defensive :math:`\hat k_m > 0.7` (the weights the moments need are unreliable:
   mass where the guide has almost none);
3. ``"moments"``: the defensive moments disagree with the guide's (``biased``: past 0.1 sd or
   10 % by more than their standard error), or the plain ones do (their weights reliable,
   :math:`\hat k \le 0.7`): either weighting can see a miss the other's noise hides;
4. otherwise no flag; a plain :math:`\hat k > 0.7` that the defensive check confirmed, or one in
   :math:`(0.5, 0.7]`, is recorded as a note.

Without a defensive check (a guide other than AutoFlow, or a loop over draws) the rule is the
plain one: :math:`\hat k > 0.7`, else plain moments that disagree.

Example:

>>> from pyro_flows.infer.guide_check import GuideCheck
>>> plain = GuideCheck(0.9, 4000, 2500.0, {"a": 0.01}, {"a": 1.0}, {"a": 0.01}, {"a": 0.01})
>>> judge_guide(plain, None).flag
'khat'
>>> fine = GuideCheck(-0.5, 4000, 3500.0, {"a": 0.01}, {"a": 1.01}, {"a": 0.01}, {"a": 0.01})
>>> judge_guide(plain, fine).flag is None
True

References:

- Y. Yao, A. Vehtari, D. Simpson, A. Gelman. *Yes, but Did It Work?: Evaluating Variational
  Inference.* ICML 2018. https://arxiv.org/abs/1802.02538
- T. Hesterberg. *Weighted average importance sampling and defensive mixture distributions.*
  Technometrics 37, 1995.
"""

from __future__ import annotations

from dataclasses import dataclass

from .guide_check import KHAT_RELIABLE, GuideCheck

__all__ = ["FLAGS", "GuideVerdict", "judge_guide"]

#: the flags :func:`judge_guide` can raise
FLAGS = ("khat", "tails", "moments")


@dataclass
class GuideVerdict:
    """What :func:`judge_guide` decided.

    :ivar flag: ``None`` (no warning) or one of :data:`FLAGS`: which rule fired.
    :ivar message: the warning's text (with ``flag``), a note's (without), or ``None``.
    """

    flag: str | None = None
    message: str | None = None


def judge_guide(plain: GuideCheck, defensive: GuideCheck | None) -> GuideVerdict:
    """The rule of the module docstring: ``plain`` from the guide's own draws, ``defensive``
    from separate defensive draws (``None``: not available).

    :returns: a :class:`GuideVerdict`.
    :raises TypeError: for checks that are not :class:`~pyro_flows.infer.GuideCheck`.
    """
    for name, value in (("plain", plain), ("defensive", defensive)):
        if not (isinstance(value, GuideCheck) or (name == "defensive" and value is None)):
            raise TypeError(f"{name} must be a GuideCheck, got {type(value).__name__}")
    k, n = plain.khat, plain.num_samples
    confirmed = defensive is not None and defensive.confirmed
    if k > KHAT_RELIABLE and not confirmed:
        return GuideVerdict("khat", (
            f"PSIS k-hat = {k:.2f} > {KHAT_RELIABLE} ({n} draws): the guide is not a reliable "
            "approximation of the posterior; its means may be ok, its tails and variances "
            f"cannot be trusted (Yao et al., 2018){_defensive_note(defensive)}. Try a richer guide "
            "(AutoMultivariateNormal, pyro_flows.infer.AutoFlow) or more steps."))
    if defensive is not None and not defensive.reliable:
        return GuideVerdict("tails", (
            f"the guide's own PSIS k-hat is {k:.2f}, but that of defensive draws (a mixture with "
            f"the guide's base widened twofold) is {defensive.khat:.2f} > {KHAT_RELIABLE}: the "
            "posterior has mass where the guide's tails put almost none, so its variances (and "
            "perhaps its means) are too small. Try more steps, AutoFlow(learn_tails=True) (a "
            "tail map next to the base as well as AutoFlow's default one) or a richer guide."))
    # either reliable weighting that disagrees: the defensive one first (it reaches the tails),
    # then the plain one (a hierarchical scale's sd 0.85 of the truth read 0.88 +- 0.01 from
    # plain weights at k-hat 0.61 and 0.90 +- 0.03 from the defensive ones)
    judged = next((c for c in (defensive, plain) if c is not None and c.biased), None)
    if judged is not None:
        weights, field = (("PSIS-weighted", "result.check") if judged is plain
                          else ("defensively weighted", "result.defensive_check"))
        return GuideVerdict("moments", (
            f"the guide's moments disagree with the {weights} ones (k-hat {judged.khat:.2f} <= "
            f"{KHAT_RELIABLE}, so the weights can be trusted): {judged.summary()}. The guide's "
            "means or sds are off by about that much (an sd ratio above 1: too wide, which "
            "k-hat cannot see; below 1: too narrow). Try more steps, a richer guide, or "
            f"reweight its draws ({field}; pyro_flows.infer.guide_importance_check)."))
    if k > KHAT_RELIABLE and defensive is not None:  # confirmed by the defensive check
        return GuideVerdict(None, (
            f"PSIS k-hat = {k:.2f} > {KHAT_RELIABLE} from the guide's own draws, but the "
            f"defensively weighted moments (k-hat {defensive.khat:.2f}) agree with the guide's "
            "within the limits by two standard errors: its means and sds are fine, but estimates "
            "that reweight its own draws may rest on a few large ratios (k-hat judges the "
            f"ratios' tail; ESS {plain.ess:.0f} of {n}) ({defensive.summary()})"))
    if k > 0.5:
        return GuideVerdict(None, f"PSIS k-hat = {k:.2f} is in (0.5, {KHAT_RELIABLE}]: usable, "
                                  "but importance-sampling corrections will be noisy")
    return GuideVerdict()


def _defensive_note(defensive: GuideCheck | None) -> str:
    """What the defensive weights say, for the k-hat warning."""
    if defensive is None:
        return ""
    if not defensive.reliable:
        return f"; defensive draws' k-hat {defensive.khat:.2f} (unreliable too)"
    return f"; defensively weighted (k-hat {defensive.khat:.2f}): {defensive.summary()}"
