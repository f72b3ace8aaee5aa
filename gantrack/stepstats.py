"""A training step's numbers, computed in one place for the harness and for ``LoopProbes``.

- ``bn_stats_frozen``: forward passes in train mode that leave BatchNorm's running statistics as
  they were (the probe passes, and D in the generator step where Keras 2.2.4 uses batch statistics);
- ``step_metrics``: the per-step metric contract (``contract``: ``loss/*``, ``acc/*``, ``prob/*`` and
  ``probe/<cell>/<stat>``) from D's raw scores — the same function of the same scores, whoever
  trained the step, so a harness run and a user's loop that see the same batches log the same dict;
- ``as_floats``: those 0-dim tensors as Python floats with one device sync;
- ``RunMonitor``: what is decided about the run as it trains — diversity snapshots of G's samples
  (``gantrack.diversity``) every ``every`` steps and the online failure-mode detector
  (``gantrack.diagnosis``), with ``stop_on``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import contract as C
from .diagnosis import Detector, Diagnosis
from .errors import GantrackError
from .losses import LossFamily


def bn_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def bn_stats_frozen(*modules: nn.Module, layers: list[nn.Module] | None = None):
    """Run forward passes in train mode without moving BatchNorm's running statistics.

    The layers get scratch copies of their buffers for the duration and the originals back
    afterwards; the originals are never written, so autograd's saved-tensor versions stay valid.
    ``layers``: the modules' BatchNorm layers when the caller has listed them already (walking the
    module tree costs more than a small critic's forward pass).
    """
    bns = layers if layers is not None else [bn for m in modules for bn in bn_layers(m)]
    saved = [dict(m._buffers) for m in bns]
    for m in bns:
        for name, buf in list(m._buffers.items()):
            if buf is not None:
                m._buffers[name] = buf.clone()
    try:
        yield
    finally:
        for m, buffers in zip(bns, saved):
            m._buffers.update(buffers)


def cell_stats(fam: LossFamily, cells: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``probe/<cell>/p``, ``/d_fake`` and ``/g`` of each cell's raw scores (batch means)."""
    out = {}
    for name, score in cells.items():
        o = fam.output(score)
        out[C.probe_key(name, "p")] = o.mean()
        out[C.probe_key(name, "d_fake")] = fam.d_fake(o).mean()
        out[C.probe_key(name, "g")] = fam.g(o).mean()
    return out


def step_metrics(
    fam: LossFamily,
    fake_scores: torch.Tensor,
    gen_scores: torch.Tensor,
    real_scores: torch.Tensor | None = None,
    cells: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The contract's per-step values (0-dim tensors) from D's raw scores (logits or critic values).

    ``fake_scores``: D's fake batch in D's step (before D's update: ``loss/d_fake``); ``gen_scores``:
    G's batch as the generator loss saw it (``loss/g``); ``real_scores``: D's real batch (``loss/d_real``,
    ``acc/real``, ``prob/real`` and ``loss/d`` = the mean of the two halves); ``cells``: the probe
    cells' raw scores (``contract.CELLS``).
    """
    out_fake, out_gen = fam.output(fake_scores.detach()), fam.output(gen_scores.detach())
    m = {
        C.D_FAKE: fam.d_fake(out_fake).mean(),
        C.G_LOSS: fam.g(out_gen).mean(),
        C.ACC_FAKE: (out_fake <= fam.threshold).float().mean(),
        C.PROB_FAKE: out_fake.mean(),
        C.PROB_GEN: out_gen.mean(),
    }
    if fam.name == "hinge":  # where the hinge's losses move at all (outside the margin they are flat)
        m[C.MARGIN_FAKE] = (out_fake > -1.0).float().mean()
    if real_scores is not None:
        out_real = fam.output(real_scores.detach())
        if fam.name == "hinge":
            m[C.MARGIN_REAL] = (out_real < 1.0).float().mean()
        m[C.D_REAL] = fam.d_real(out_real).mean()
        m[C.ACC_REAL] = (out_real > fam.threshold).float().mean()
        m[C.PROB_REAL] = out_real.mean()
        # the mean of the two halves (what a joint batch reports); the book logs d1, d2 apart
        m[C.D_LOSS] = 0.5 * (m[C.D_REAL] + m[C.D_FAKE])
    if cells:
        m.update(cell_stats(fam, cells))
    return m


def nonfinite_losses(metrics: dict[str, float]) -> list[str]:
    """The loss components (``loss/*``) of a step's float metrics that are NaN or infinite."""
    return [k for k in C.LOSS_COMPONENTS if k in metrics and not math.isfinite(metrics[k])]


def as_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-dim tensors as floats: one stack and one device sync, not one per key."""
    keys = list(metrics)
    if not keys:
        return {}
    return dict(zip(keys, torch.stack([metrics[k].detach().float() for k in keys]).cpu().tolist()))


def parse_stop_on(value) -> tuple[str, ...]:
    """``"convergence-failure,diverged"`` (or a sequence) → the failure modes, or one clear error."""
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()]
    unknown = [v for v in items if v not in C.FAILURE_MODES]
    if unknown:
        raise GantrackError(f"stop_on: unknown mode {unknown[0]!r}; choose from: {', '.join(C.FAILURE_MODES)}")
    return tuple(items)


class RunMonitor:
    """Diversity snapshots and the online detector of one run, for the harness and ``LoopProbes`` alike.

    ``sample(n)``: n of G's samples (drawn without touching the training random stream); ``reference``: a
    ``diversity.Reference`` (None: no snapshots, the detector works from the losses); ``every``: steps
    between snapshots; ``stop_on``: failure modes that end the run early. ``after_step`` returns the extra
    metrics to log at that step (``div/*`` at snapshots; ``diagnosis/*`` when the verdict changes) and the
    new decision, if any; ``stop_reason`` is set once a decision names a ``stop_on`` mode.
    """

    def __init__(self, loss: str, reference=None, sample=None, every: int = 0, stop_on: tuple[str, ...] = ()):
        self.reference, self.sample, self.every = reference, sample, every
        self.stop_on = parse_stop_on(stop_on)
        self.detector = Detector(loss)
        self.stop_reason: str | None = None
        self._null_logged = False

    def after_step(
        self, step: int, metrics: dict[str, float], g_batch: torch.Tensor | None = None
    ) -> tuple[dict[str, float], Diagnosis | None]:
        """``g_batch``: G's samples of this step's generator update (for ``div/batch_bins``)."""
        from .diversity import effective_bins, snapshot_metrics

        self.detector.add(step, metrics)
        extra: dict[str, float] = {}
        if self.reference is not None and g_batch is not None and len(g_batch) > 1:
            extra[C.DIV_BATCH_BINS] = effective_bins(g_batch.detach().float(), self.reference.centres)
            if not self._null_logged:
                self._null_logged = True
                extra[C.DIV_BATCH_BINS_NULL] = self.reference.batch_bins_null(len(g_batch))
        if self.reference is not None and self.sample is not None and self.every > 0 and step % self.every == 0:
            snap = snapshot_metrics(self.sample(self.reference.snapshot), self.reference)
            self.detector.add_snapshot(step, snap)
            extra.update(snap)
        new = self.detector.update()
        if new is not None:
            extra.update(decision_metrics(new))
            if new.verdict in self.stop_on and self.stop_reason is None:
                self.stop_reason = f"{new.verdict} at step {step}"
        return extra, new

    def restore(self, history: dict[str, list[float]], snapshots: dict[str, list[tuple[int, float]]]) -> None:
        """A resumed run: the detector gets the steps before the checkpoint (``history``: key → one value
        per step from step 1) and the diversity snapshots the store holds, so its decisions are the
        uninterrupted run's."""
        n = max((len(v) for v in history.values()), default=0)
        for i in range(n):
            self.detector.add(i + 1, {k: v[i] for k, v in history.items() if len(v) > i})
        by_step: dict[int, dict[str, float]] = {}
        for key, points in snapshots.items():
            if key not in C.DIVERSITY_KEYS or key in (C.DIV_BATCH_BINS, C.DIV_BATCH_BINS_NULL):
                continue  # the detector reads the snapshots only
            for step, value in points:
                by_step.setdefault(step, {})[key] = value
        for step in sorted(by_step):
            self.detector.add_snapshot(step, by_step[step])
        self._null_logged = n > 0
        if n:
            self.detector.update_to_now()

    def final(self) -> Diagnosis:
        return self.detector.final()


def decision_metrics(d: Diagnosis) -> dict[str, float]:
    m = {C.DIAG_CODE: float(d.code)}
    if d.onset_step is not None:
        m[C.DIAG_ONSET] = float(d.onset_step)
    return m
