"""Which failure mode a run is in, since which step, and on what evidence: written-down rules, no classifier.

``decide(steps, series, snapshots, loss)`` reads a run's per-step curves (``loss/*``, ``acc/*``, the
probe cells' ``p``, ``grad/*``) and its diversity snapshots (``div/*``) and returns a ``Diagnosis``.
The harness and ``LoopProbes`` run it while training (``Detector``: every ``EVERY`` steps, so
``stop_on`` can end a run early) and ``gantrack.analysis.diagnose`` runs the same function on stored
runs, including runs from other tools, which are diagnosed from what they log: what would decide them
and is not there is listed in ``missing``, never guessed.

The rules, first match wins (docs/diagnosis.md gives the reason for every threshold):

1. ``diverged``: a non-finite loss at step k (onset k), or a gradient norm above ``GRAD_BLOWUP`` times
   its median over the run's first fifth and above ``GRAD_LARGE`` for ``SUSTAIN_GRAD`` steps in a row.
2. ``convergence-failure``: D wins for good — d_real and d_fake both below ``D_LOSS_WIN`` (loss/d alone
   for a combined batch) and, where logged, D's accuracy on real and fake ≥ ``ACC_WIN``, on at least
   ``HOLD`` of the steps from the onset to the end, for at least ``SUSTAIN`` steps. The chapter's two
   failures are told apart by the D(G(z)) that g implies through the family's link: "D wins, g rising"
   (below ``Q_LOW``, the Adam defaults; for minimax "G's loss saturates") or "d ≈ 0 and g ≈ 0" (above
   ``Q_HIGH``: G's all-fake batch scored real), which is "BatchNorm batch context" only when the probe
   cells' ``p`` in the two contexts show D calling its own fakes fake in its combined batch and real alone
   (the ``context`` factor).
   Not for the Wasserstein critic, whose losses are unbounded and have no accuracy.
3. ``stalled``: every logged loss component frozen (peak-to-peak ≤ ``FROZEN`` relative) over the last
   ``STALL_STEPS`` steps or more: nothing is being learnt (checked after 2: a D saturated at the loss's
   clip, D(x) = 1 − 1e-7, freezes the losses too, and that is a convergence failure).
4. ``mode-collapse``: at the last ``COLLAPSED_SNAPSHOTS`` diversity snapshots (the first
   ``WARMUP_SNAPSHOTS`` never count: an untrained G maps every z to nearly one image), G's samples have
   near-duplicates for at least ``DUP_COLLAPSE`` of them while covering at most ``COVERAGE_COLLAPSE`` of
   the real-vs-real coverage ceiling (both: blurred but varied samples have close neighbours and full
   coverage; poor but varied ones have low coverage and no duplicates); on ``ring-2d``, at most
   ``RING_COLLAPSE`` of the 8 modes kept (``div/modes_kept``: a mode's nearest-mode cell holds at least
   a quarter of its share of G's samples; one dropped is enough) while G's samples are on the data
   (quality above the garbage line of rule 5); runs logged before ``div/modes_kept``: at most
   ``RING_COLLAPSE`` modes covered within 3 σ with at least ``RING_QUALITY`` of the samples on a mode.
   Onset: the first snapshot from which every later one is collapsed (resolution: the snapshot spacing).
5. ``convergence-failure``, "G's samples are not like the data" (end of run only): the last
   ``COLLAPSED_SNAPSHOTS`` snapshots after the warm-up cover at most ``COVERAGE_GARBAGE`` of the coverage
   ceiling (on ``ring-2d``: quality at most ``COVERAGE_GARBAGE`` of its ceiling ``RING_QUALITY_CEILING``)
   — the chapter's "the generated images are garbage", whoever wins in the losses.
6. ``oscillating`` (end of run only): not converging, without loss of diversity — over the second half
   D's accuracy swings across its range: at least ``SWING`` of the steps below ``ACC_LOSING`` and at
   least ``SWING`` above ``ACC_WIN``.
7. ``stable`` (end of run only): none of the above, and D neither wins nor loses over the second half
   (mean accuracy in ``ACC_STABLE``: around 0.5 is the equilibrium).
8. ``undecided``: a run shorter than ``MIN_STEPS``, or one whose signals point nowhere — with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import contract as C

MIN_STEPS = 50  # fewer: no second half to judge a level or a swing on
GRAD_BLOWUP, SUSTAIN_GRAD = 1e3, 5
# an exploding gradient is large in absolute terms too: the largest gradient norm in the 140 runs of
# validation rounds 1-3 (D's, in runs that never diverged) was 707; an order of magnitude above it. Without
# it, G's gradient coming back to 0.1-0.2 after vanishing at once (1e-8: D won from the first steps) was
# called an explosion (round 3)
GRAD_LARGE = 1e4
FROZEN, STALL_STEPS = 1e-6, 50
ACC_WIN = 0.99  # D right on (nearly) every sample of its batches
D_LOSS_WIN = 0.05  # -log(1 - p) < 0.05 <=> D gives fakes p < 0.05 (and reals p > 0.95)
HOLD, SUSTAIN = 0.95, 20
# D wins with G's batch scored fake (D(G(z)) < 0.7 %: -log D(G(z)) > 5 for the non-saturating loss) or,
# in D's own batch only, with G's batch scored real (D(G(z)) > 90 %: -log D(G(z)) < 0.1)
Q_LOW, Q_HIGH = math.exp(-5.0), math.exp(-0.1)
DUP_COLLAPSE, COVERAGE_COLLAPSE, COLLAPSED_SNAPSHOTS = 0.5, 0.5, 3
WARMUP_SNAPSHOTS = 2  # G starts near one output for every z: its first snapshots look collapsed in every run
# ring collapse: fewer modes than the data has, at every one of the last snapshots. Samples of the data
# itself cover all 8 (a mode holds 1/8 of 2,500 samples against the 20 that count it); round 3 of the
# validation showed the non-saturating GAN settling on 5 of the 8, which "at most 4" called stable
RING_COLLAPSE = 7
SWING, ACC_LOSING = 0.10, 0.30
ACC_STABLE = (0.3, 0.95)  # around 0.5 is the equilibrium D(x) = 1/2 (Goodfellow et al. 2014), not a loss
RING_QUALITY = 0.5  # ring collapse: most samples on some mode (else G has not found the data at all)
# samples unlike the data: G's samples fall in at most 10 % of the real samples' 5-NN balls (real vs real:
# the ceiling, 0.98 for 1,000 eights; the calibration runs: stable 0.43-0.44 of it, the Adam defaults 0.08)
COVERAGE_GARBAGE = 0.1
# the ring's quality (share within 3 sigma of a mode) for samples drawn from the data itself: a 2-D
# Gaussian puts 1 - exp(-9/2) of its mass within 3 sigma. The garbage rule is the same on the ring as on
# images: at most COVERAGE_GARBAGE of what the data itself scores (WGAN-GP's samples between the modes,
# quality 0.2-0.4 over all 8 modes, are poor, not garbage)
RING_QUALITY_CEILING = 1 - math.exp(-4.5)
EVERY = 10  # the online detector decides every this many steps
# the tutorial's ranges for the stable run (second half), given as evidence, not used to decide
TUTORIAL_STABLE = {C.D_REAL: (0.5, 0.8), C.D_FAKE: (0.5, 0.8), C.G_LOSS: (1.0, 2.0), "acc": (0.7, 0.8)}


@dataclass
class Diagnosis:
    """One run's verdict (``contract.VERDICTS``), its subtype, onset step (with its resolution in steps),
    the evidence that fired (with margins to the thresholds) and what the run lacks to decide more."""

    verdict: str
    subtype: str = ""
    onset_step: int | None = None
    onset_resolution: int | None = None
    evidence: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        return C.VERDICTS.index(self.verdict)

    def line(self) -> str:
        """The verdict in one line (the MLflow description starts with it)."""
        onset = f" since step {self.onset_step}" if self.onset_step is not None else ""
        sub = f" ({self.subtype})" if self.subtype else ""
        return f"{self.verdict}{sub}{onset}"


def _onset(flag: np.ndarray, steps: np.ndarray, hold: float = HOLD, sustain: int = SUSTAIN) -> int | None:
    """Index of the first step from which ``flag`` holds on at least ``hold`` of the steps to the end
    (and at that step), with at least ``sustain`` steps to the end; None if there is none."""
    n = len(flag)
    if n < sustain:
        return None
    tail_true = np.cumsum(flag[::-1])[::-1]  # true steps from i to the end
    tail_len = np.arange(n, 0, -1)
    ok = flag & (tail_true >= hold * tail_len) & (tail_len >= sustain)
    idx = np.flatnonzero(ok)
    return int(idx[0]) if len(idx) else None


def _late(x: np.ndarray) -> np.ndarray:
    return x[len(x) // 2 :]


def _mean(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def decide(
    steps: np.ndarray,
    series: dict[str, np.ndarray],
    snapshots: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    loss: str = "nsgan",
    final: bool = True,
    nonfinite: tuple[int, list[str]] | None = None,
) -> Diagnosis:
    """The rules above on one run. ``steps``: the logged steps, increasing; ``series``: key → values at
    those steps (NaN where a key was not logged); ``snapshots``: ``div/*`` key → (steps, values);
    ``loss``: the family (tag ``gantrack.loss``); ``final``: the run has ended (``stable`` and
    ``oscillating`` are only said then; while training, only the failure modes are); ``nonfinite``: the
    first step with a non-finite loss and those losses (NaN in ``series`` also stands for "not logged at
    that step", so the caller, who saw the values, says which NaN were logged)."""
    steps = np.asarray(steps)
    snapshots = snapshots or {}
    missing: list[str] = []
    if len(steps) == 0:
        return Diagnosis("undecided", evidence=["no steps logged"], missing=["loss/*"])
    losses = [k for k in C.LOSS_COMPONENTS if k in series]
    if not losses:
        return Diagnosis("undecided", evidence=["no loss/* curves"], missing=["loss/d_real, loss/d_fake, loss/g"])

    # 1. diverged
    if nonfinite is not None:
        step, which = nonfinite
        return Diagnosis(
            "diverged", "a NaN or infinite loss", int(step), 1, [f"{', '.join(which)} NaN or infinite at step {step}"]
        )
    for k in (C.GRAD_D, C.GRAD_G):
        if k in series and len(steps) >= 5 * SUSTAIN_GRAD:
            v = series[k]
            base = np.nanmedian(v[: max(SUSTAIN_GRAD, len(v) // 5)])
            # a gradient that vanished early (D won at once: G's gradient ~1e-8) and then came back to a
            # normal size is a recovery, not an explosion: the norm must also pass GRAD_LARGE
            if np.isfinite(base) and base > 0:
                high = (v > GRAD_BLOWUP * base) & (v > GRAD_LARGE)
                run = _first_run(high, SUSTAIN_GRAD)
                if run is not None:
                    return Diagnosis(
                        "diverged",
                        "exploding gradients",
                        int(steps[run]),
                        1,
                        [
                            f"{k} {v[run]:.3g} > {GRAD_BLOWUP:g} × its early median {base:.3g} and > {GRAD_LARGE:g} "
                            f"for {SUSTAIN_GRAD}+ steps"
                        ],
                    )
    if not any(k in series for k in (C.GRAD_D, C.GRAD_G)):
        missing.append("grad/* (exploding gradients)")

    if len(steps) < MIN_STEPS:
        return Diagnosis(
            "undecided", evidence=[f"{len(steps)} steps logged, fewer than {MIN_STEPS}: too short to decide"]
        )

    # 2. convergence failure: D wins for good
    evidence: list[str] = []
    win, how = _d_wins(series, loss)
    g = series.get(C.G_LOSS)
    if win is None:
        missing.append(how)
    else:
        i = _onset(win, steps)
        if i is not None:
            held = float(win[i:].mean())
            evidence.append(f"{how} on {100 * held:.0f} % of steps {steps[i]}–{steps[-1]} (rule: ≥ {100 * HOLD:.0f} %)")
            subtype = "D wins"
            if g is not None and loss in C.PROBABILITY_FAMILIES:
                g_end = _mean(g[max(i, len(g) - 50) :])
                q = _implied_gen_prob(loss, g_end)  # D(G(z)) as the generator loss's link gives it
                if q < Q_LOW and loss == "minimax":
                    subtype = "D wins, G's loss saturates"
                    evidence.append(
                        f"mean g {g_end:.3f} over the last steps: D(G(z)) ≈ {q:.3g} (rule: < {Q_LOW:g}), where the "
                        "minimax loss log(1 − D(G(z))) is flat and G gets no gradient (Goodfellow et al. 2014)"
                    )
                elif q < Q_LOW:
                    subtype = "D wins, g rising"
                    evidence.append(f"mean g {g_end:.2f} over the last steps (rule: D(G(z)) {q:.3g} < {Q_LOW:g})")
                elif q > Q_HIGH:
                    evidence.append(
                        f"mean g {g_end:.3f} over the last steps: D(G(z)) ≈ {q:.2f} (rule: > {Q_HIGH:g}), G's batch "
                        "scored real while D's own fakes are scored fake"
                    )
                    ctx = _context_gap(series, i)
                    if ctx is None:
                        subtype = "d ≈ 0 and g ≈ 0: G's batch scored real (context cells not logged)"
                        missing.append("probe cells dbatch_before/p, dbatch_before_gctx/p (the context factor)")
                    else:
                        shown, gap = ctx
                        evidence.append(shown)
                        subtype = (
                            "d ≈ 0 and g ≈ 0: BatchNorm batch context"
                            if gap
                            else "d ≈ 0 and g ≈ 0: not the batch context (D scores its fakes alike in and out of it)"
                        )
            return Diagnosis("convergence-failure", subtype, int(steps[i]), _spacing(steps), evidence, missing)

    # 3. stalled (after D-wins: a D saturated at Keras's clip freezes the losses too)
    frozen_from = _frozen_since(steps, [series[k] for k in losses])
    if frozen_from is not None and (steps[-1] - steps[frozen_from]) + 1 >= STALL_STEPS:
        return Diagnosis(
            "stalled",
            "losses frozen",
            int(steps[frozen_from]),
            1,
            [f"{', '.join(losses)} unchanged (peak-to-peak ≤ {FROZEN:g}) over steps {steps[frozen_from]}–{steps[-1]}"],
        )

    # 4. mode collapse from the diversity snapshots
    collapse = _collapse(snapshots)
    if collapse is None:
        missing.append("div/* (sample diversity snapshots)")
    elif collapse[0] is False:
        missing.append(collapse[2][0])
        collapse = None  # diversity unknown
    elif collapse[0] is not None:
        onset, resolution, ev = collapse
        fake_acc = series.get(C.ACC_FAKE)
        if fake_acc is not None:
            ev.append(
                f"mean acc/fake {_mean(_late(fake_acc)):.2f} over the second half (the tutorial: many around 100 %)"
            )
        return Diagnosis("mode-collapse", "few distinct samples", onset, resolution, ev, missing)
    else:
        evidence.extend(collapse[2])

    if not final:
        return Diagnosis("undecided", evidence=evidence + ["no failure mode yet"], missing=missing)

    # 5. the end of the run: samples that never came to resemble the data are the chapter's other
    # convergence failure ("the generated images are garbage"), whoever wins in the losses
    garbage = _unlike_data(snapshots)
    if garbage is not None:
        onset, resolution, ev = garbage
        return Diagnosis(
            "convergence-failure", "G's samples are not like the data", onset, resolution, ev + evidence, missing
        )

    # 6./7. the end of the run: oscillating or stable
    acc = _accuracy(series)
    if acc is None:
        missing.append("acc/real, acc/fake (who wins)")
        return Diagnosis("undecided", evidence=evidence + ["no accuracy to judge the second half by"], missing=missing)
    late = _late(acc)
    late = late[np.isfinite(late)]
    losing, winning = float((late < ACC_LOSING).mean()), float((late > ACC_WIN).mean())
    if losing >= SWING and winning >= SWING:
        ev = [  # the deciding evidence first, then the diversity it rests on
            f"second half: D accuracy < {ACC_LOSING:.0%} on {losing:.0%} and > {ACC_WIN:.0%} on {winning:.0%} of steps "
            f"(rule: both ≥ {SWING:.0%})"
        ] + evidence
        if collapse is None:  # "without loss of diversity" cannot be shown
            return Diagnosis("undecided", "oscillating losses, diversity unknown", evidence=ev, missing=missing)
        return Diagnosis("oscillating", "D's accuracy swings", evidence=ev, missing=missing)
    m = float(late.mean())
    lo, hi = ACC_STABLE
    ev = [f"second-half mean D accuracy {m:.2f} (stable: in [{lo}, {hi}], margins {m - lo:+.2f}, {hi - m:+.2f})"]
    ev += evidence + _tutorial_levels(series, acc)
    if lo <= m <= hi:
        fake_acc = series.get(C.ACC_FAKE)
        if collapse is None and fake_acc is not None and _mean(_late(fake_acc)) >= 0.95:
            return Diagnosis(
                "undecided",
                "fake accuracy ≈ 100 %: the mode-collapse signature in the losses",
                evidence=ev,
                missing=missing,
            )
        return Diagnosis("stable", "", evidence=ev, missing=missing)
    return Diagnosis(
        "undecided", f"D {'wins' if m > hi else 'loses'} on average, not for good", evidence=ev, missing=missing
    )


def _first_run(flag: np.ndarray, length: int) -> int | None:
    """Index where ``flag`` first holds ``length`` times in a row."""
    count = 0
    for i, f in enumerate(flag):
        count = count + 1 if f else 0
        if count >= length:
            return i - length + 1
    return None


def _frozen_since(steps, curves) -> int | None:
    """First index of the trailing stretch over which every curve stays within FROZEN of its last value."""
    start = 0
    for v in curves:
        last = v[-1]
        if not np.isfinite(last):
            return None
        off = np.abs(v - last) > FROZEN * (1 + abs(last))
        idx = np.flatnonzero(off)
        start = max(start, int(idx[-1]) + 1 if len(idx) else 0)
    return start if start < len(steps) else None


def _accuracy(series) -> np.ndarray | None:
    have = [series[k] for k in (C.ACC_REAL, C.ACC_FAKE) if k in series]
    if not have:
        return None
    return np.nanmean(np.vstack(have), axis=0) if len(have) > 1 else have[0]


def _d_wins(series, loss) -> tuple[np.ndarray | None, str]:
    """Per-step "D wins" and how it was read, or (None, what is missing). D's losses near 0 say it;
    its accuracy alone does not (a D right on every sample with fakes at p = 0.2 still gives G a
    gradient: -log(1 - 0.2) = 0.22): both are required where both are logged."""
    if loss == "wgan-gp":
        return None, "(the Wasserstein critic has no accuracy or bounded loss: no D-wins rule)"
    flags, how = [], []
    if C.D_REAL in series and C.D_FAKE in series:
        flags.append((series[C.D_REAL] < D_LOSS_WIN) & (series[C.D_FAKE] < D_LOSS_WIN))
        how.append(f"d_real and d_fake < {D_LOSS_WIN}")
    elif C.D_LOSS in series:
        flags.append(series[C.D_LOSS] < D_LOSS_WIN)
        how.append(f"loss/d < {D_LOSS_WIN}")
    else:
        return None, "loss/d_real, loss/d_fake or loss/d (who wins)"
    if C.ACC_REAL in series and C.ACC_FAKE in series:
        flags.append((series[C.ACC_REAL] >= ACC_WIN) & (series[C.ACC_FAKE] >= ACC_WIN))
        how.append(f"acc/real and acc/fake ≥ {ACC_WIN}")
    return np.logical_and.reduce(flags), " and ".join(how)


def _context_gap(series, i) -> tuple[str, bool] | None:
    """(evidence, whether the batch context explains it): D's fakes scored fake in D's own batch
    (p̄ < 1 − Q_HIGH) and real as G's step sees them (p̄ > Q_HIGH)."""
    a, b = (series.get(C.probe_key(c, "p")) for c in ("dbatch_before", "dbatch_before_gctx"))
    if a is None or b is None:
        return None
    pa, pb = _mean(a[i:]), _mean(b[i:])
    gap = pa < 1 - Q_HIGH and pb > Q_HIGH
    return (
        f"context: D's fakes get p̄ {pa:.3f} in D's own batch and {pb:.3f} alone, as G's batch is scored "
        f"(probe cells dbatch_before vs dbatch_before_gctx; the context explains it when < {1 - Q_HIGH:.2g} and "
        f"> {Q_HIGH:g})",
        gap,
    )


def _implied_gen_prob(loss: str, g: float) -> float:
    """D(G(z)) implied by a batch's generator loss through the family's link (``losses.LossFamily.inv_g``)."""
    import torch

    from .losses import family

    return float(family(loss).inv_g(torch.tensor(float(g), dtype=torch.float64)))


def _spacing(steps) -> int:
    return int(np.median(np.diff(steps))) if len(steps) > 1 else 1


def _coverage(snapshots):
    """(steps, coverage, ceiling, coverage over ceiling) of the snapshots."""
    s, cov = snapshots[C.DIV_COVERAGE]
    ceiling = snapshots.get(C.DIV_COVERAGE_CEILING, (s, np.ones(len(s))))[1]
    return s, cov, ceiling, cov / np.where(ceiling > 0, ceiling, 1.0)


def _judge(s, flags, what: list[str], rule: str) -> tuple[int | None | bool, int | None, list[str]]:
    """A per-snapshot flag after the warm-up: (onset, resolution, evidence) with the onset the first
    snapshot from which every later one is flagged when the last ``COLLAPSED_SNAPSHOTS`` all are, None
    when they are not, False when there are too few snapshots after the warm-up to judge."""
    n_all, w = len(s), WARMUP_SNAPSHOTS
    s, flags, what = np.asarray(s)[w:], np.asarray(flags, bool)[w:], list(what)[w:]
    if len(s) < COLLAPSED_SNAPSHOTS:
        return False, None, [f"{n_all} diversity snapshots ({w} warm-up): {COLLAPSED_SNAPSHOTS} after it needed"]
    at = ", ".join(str(int(x)) for x in s[-COLLAPSED_SNAPSHOTS:])
    shown = " / ".join(what[-COLLAPSED_SNAPSHOTS:])
    ev = [f"last snapshots (steps {at}): {shown} (rule: {rule} at the last {COLLAPSED_SNAPSHOTS} snapshots)"]
    if not flags[-COLLAPSED_SNAPSHOTS:].all():
        held = _first_run(flags, COLLAPSED_SNAPSHOTS)
        if held is not None:  # it held earlier and let go: a run recovering, worth saying (not a verdict)
            end = held + int(np.argmin(flags[held:]))
            ev.append(f"the rule held at snapshots {int(s[held])}–{int(s[end - 1])}, not at the last ones")
        return None, None, ev
    first = len(flags) - int(np.argmin(flags[::-1])) if not flags.all() else 0
    resolution = int(np.median(np.diff(s))) if len(s) > 1 else None
    return int(s[first]), resolution, ev


def _collapse(snapshots) -> tuple[int | None | bool, int | None, list[str]] | None:
    """``_judge`` of a collapse in the snapshots; None when the run has no snapshots to read."""
    if C.DIV_MODES_KEPT in snapshots:
        s, kept = snapshots[C.DIV_MODES_KEPT]
        quality = snapshots.get(C.DIV_QUALITY, (s, np.ones(len(s))))[1]
        if len(quality) != len(s):
            return None
        # modes dropped from G's mass, read from the nearest-mode cells, so that a G spread between the
        # modes (low quality, all 8 cells near 1/8) is not counted as dropping them; a G whose samples are
        # on no mode at all is the garbage rule's (it has not found the data), not a collapse
        floor = COVERAGE_GARBAGE * RING_QUALITY_CEILING
        flags = (kept <= RING_COLLAPSE) & (quality > floor)
        what = [f"{int(k)} of 8 ring modes kept, quality {q:.2f}" for k, q in zip(kept, quality)]
        return _judge(s, flags, what, f"≤ {RING_COLLAPSE} modes kept with quality > {floor:.3f}")
    if C.DIV_MODES in snapshots:  # runs logged before div/modes_kept: the 3-sigma count
        s, modes = snapshots[C.DIV_MODES]
        quality = snapshots.get(C.DIV_QUALITY, (s, np.ones(len(s))))[1]
        # collapse is high-quality samples on few modes (PacGAN, VEEGAN); samples on no mode are a G that
        # has not found the data, not a collapse
        flags = (modes <= RING_COLLAPSE) & (quality >= RING_QUALITY)
        what = [f"{int(m)} of 8 ring modes covered, quality {q:.2f}" for m, q in zip(modes, quality)]
        return _judge(s, flags, what, f"≤ {RING_COLLAPSE} modes with quality ≥ {RING_QUALITY}")
    if C.DIV_DUPLICATES in snapshots and C.DIV_COVERAGE in snapshots:
        s, dup = snapshots[C.DIV_DUPLICATES]
        s2, cov, ceiling, rel = _coverage(snapshots)
        if len(s2) != len(s) or not np.array_equal(s, s2):
            return None
        flags = (dup >= DUP_COLLAPSE) & (rel <= COVERAGE_COLLAPSE)
        what = [f"duplicates {d:.2f}, coverage {c:.2f} of ceiling {e:.2f}" for d, c, e in zip(dup, cov, ceiling)]
        return _judge(s, flags, what, f"duplicates ≥ {DUP_COLLAPSE} and coverage ≤ {COVERAGE_COLLAPSE} × ceiling")
    return None


def _unlike_data(snapshots) -> tuple[int, int | None, list[str]] | None:
    """(onset, resolution, evidence) when the last ``COLLAPSED_SNAPSHOTS`` snapshots after the warm-up all
    find G's samples far from the data (coverage ≤ ``COVERAGE_GARBAGE`` × ceiling; on the ring, quality
    at most ``COVERAGE_GARBAGE`` × ``RING_QUALITY_CEILING``), else None."""
    if C.DIV_QUALITY in snapshots:
        s, v = snapshots[C.DIV_QUALITY]
        limit = COVERAGE_GARBAGE * RING_QUALITY_CEILING
        what = [f"quality {q:.2f}" for q in v]
        judged = _judge(s, v <= limit, what, f"quality ≤ {COVERAGE_GARBAGE} × {RING_QUALITY_CEILING:.3f} (data's)")
    elif C.DIV_COVERAGE in snapshots:
        s, cov, ceiling, rel = _coverage(snapshots)
        what = [f"coverage {c:.2f} of ceiling {e:.2f}" for c, e in zip(cov, ceiling)]
        judged = _judge(s, rel <= COVERAGE_GARBAGE, what, f"coverage ≤ {COVERAGE_GARBAGE} × ceiling")
    else:
        return None
    return judged if judged[0] is not None and judged[0] is not False else None


def _tutorial_levels(series, acc) -> list[str]:
    out = []
    for k in (C.D_REAL, C.D_FAKE, C.G_LOSS):
        if k in series:
            lo, hi = TUTORIAL_STABLE[k]
            m = _mean(_late(series[k]))
            out.append(f"second-half mean {k[5:]} {m:.2f} (tutorial's stable run: {lo}-{hi})")
    lo, hi = TUTORIAL_STABLE["acc"]
    out.append(f"second-half mean accuracy {100 * _mean(_late(acc)):.0f} % (tutorial: {100 * lo:.0f}-{100 * hi:.0f} %)")
    return out


DESCRIPTION_MARK = "**Diagnosis: "


def describe(d: Diagnosis, note: str) -> str:
    """A run's MLflow description with the verdict first (an earlier verdict line is replaced)."""
    if note.startswith(DESCRIPTION_MARK):
        note = note.split(".** ", 1)[1] if ".** " in note else ""
    return f"{DESCRIPTION_MARK}{d.line()}.** {note}"


class Detector:
    """``decide`` while a run trains: ``add`` each step's metrics (and ``add_snapshot`` each diversity
    snapshot); every ``EVERY`` steps ``update`` decides on the history so far. ``decision`` is the latest
    non-``undecided`` verdict; ``final()`` decides on the whole run."""

    KEYS = (*C.LOSS_COMPONENTS, C.ACC_REAL, C.ACC_FAKE, C.GRAD_D, C.GRAD_G) + tuple(
        C.probe_key(c, "p") for c in ("dbatch_before", "dbatch_before_gctx")
    )

    def __init__(self, loss: str):
        self.loss = loss
        # the history in preallocated arrays (NaN where a step did not log a key), grown by doubling: a
        # decision every EVERY steps reads views of them, with no copy of the whole run each time
        self._n = 0
        self._steps = np.zeros(0, dtype=np.int64)
        self._values = np.zeros((len(self.KEYS), 0))
        self._seen: set[int] = set()  # the keys a step has logged at least once
        self.snaps: dict[str, tuple[list[int], list[float]]] = {}
        self.decision: Diagnosis | None = None
        self.nonfinite: tuple[int, list[str]] | None = None

    @property
    def steps(self) -> np.ndarray:
        return self._steps[: self._n]

    @property
    def values(self) -> dict[str, np.ndarray]:
        return {k: self._values[i, : self._n] for i, k in enumerate(self.KEYS) if i in self._seen}

    def add(self, step: int, metrics: dict[str, float]) -> None:
        if self.nonfinite is None:
            bad = [k for k in C.LOSS_COMPONENTS if k in metrics and not math.isfinite(metrics[k])]
            if bad:
                self.nonfinite = (step, bad)
        n = self._n
        if n == len(self._steps):
            grow = max(256, n)
            self._steps = np.concatenate([self._steps, np.zeros(grow, dtype=np.int64)])
            self._values = np.concatenate([self._values, np.full((len(self.KEYS), grow), np.nan)], axis=1)
        self._steps[n] = step
        for i, k in enumerate(self.KEYS):
            v = metrics.get(k)
            if v is not None:
                self._values[i, n] = v
                self._seen.add(i)
        self._n = n + 1

    def add_snapshot(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            s, vals = self.snaps.setdefault(k, ([], []))
            s.append(step)
            vals.append(v)

    def _decide(self, final: bool) -> Diagnosis:
        snaps = {k: (np.asarray(s), np.asarray(v, float)) for k, (s, v) in self.snaps.items()}
        return decide(self.steps, self.values, snaps, self.loss, final=final, nonfinite=self.nonfinite)

    def update(self) -> Diagnosis | None:
        """Decide now if it is time; returns a new decision when the verdict changed, else None."""
        if not self._n or (self._steps[self._n - 1] % EVERY and self.nonfinite is None):
            return None
        d = self._decide(final=False)
        if d.verdict == "undecided" or (self.decision is not None and self.decision.verdict == d.verdict):
            return None
        self.decision = d
        return d

    def update_to_now(self) -> None:
        """The decision the detector holds after the history it has (a resumed run replays its history)."""
        d = self._decide(final=False)
        if d.verdict != "undecided":
            self.decision = d

    def final(self) -> Diagnosis:
        self.decision = self._decide(final=True)
        return self.decision
