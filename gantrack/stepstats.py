"""A training step's numbers, computed in one place for the harness and for ``LoopProbes``.

- ``bn_stats_frozen``: forward passes in train mode that leave BatchNorm's running statistics as
  they were (the probe passes, and D in the generator step where Keras 2.2.4 uses batch statistics);
- ``step_values``: the per-step metric contract (``contract``: ``loss/*``, ``acc/*``, ``prob/*`` and
  ``probe/<cell>/<stat>``) from D's raw scores, as floats with one device sync — the same function of
  the same scores, whoever trained the step, so a harness run and a user's loop that see the same
  batches log the same dict;
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


ROWS = 3 + len(C.CELLS)  # fake, gen, real and the probe cells: the most score vectors one step has


_PADDINGS: dict = {}


def _padding(lengths: tuple[int, ...], width: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mask of the real scores in the padded matrix, each row's count, a row of zeros for the unused
    rows): the same every step of a run, so made once."""
    key = (lengths, width, str(device))
    if key not in _PADDINGS:
        count = torch.tensor(list(lengths) + [1] * (ROWS - len(lengths)), dtype=torch.float32, device=device)
        mask = torch.arange(width, device=device)[None, :] < count[:, None]
        _PADDINGS[key] = (mask, count, torch.zeros(width, device=device))
    return _PADDINGS[key]


def _vector(score: torch.Tensor) -> torch.Tensor:
    """A batch's scores as a detached float32 vector (most arrive so already: no copy then)."""
    if score.ndim == 1 and score.dtype == torch.float32 and not score.requires_grad:
        return score
    return score.detach().reshape(-1).float()


def step_values(
    fam: LossFamily,
    fake_scores: torch.Tensor,
    gen_scores: torch.Tensor,
    real_scores: torch.Tensor | None = None,
    cells: dict[str, torch.Tensor] | None = None,
    extra: dict[str, torch.Tensor | None] | None = None,
) -> dict[str, float]:
    """The contract's per-step values, as floats, from D's raw scores (logits or critic values).

    ``fake_scores``: D's fake batch in D's step (before D's update: ``loss/d_fake``); ``gen_scores``:
    G's batch as the generator loss saw it (``loss/g``); ``real_scores``: D's real batch (``loss/d_real``,
    ``acc/real``, ``prob/real`` and ``loss/d`` = the mean of the two halves); ``cells``: the probe
    cells' raw scores (``contract.CELLS``): ``probe/<cell>/p``, ``/d_fake`` and ``/g``; ``extra``: other
    0-dim tensors of the step (weight norms), returned as floats alongside (None values are left out).

    Every batch of one size is stacked and each statistic is one reduction over the stack; all values
    come back in one transfer (one device sync). A step's numbers are about thirty means of batches of
    a hundred or so scores: computed one by one, the per-operation overhead cost more than the arithmetic
    (a quarter of LoopProbes' time in a small WGAN-GP loop).
    """
    rows = {"fake": fake_scores, "gen": gen_scores}
    if real_scores is not None:
        rows["real"] = real_scores
    rows.update(cells or {})
    names = list(rows)
    lengths = [rows[n].shape[0] for n in names]
    # one padded ROWS × (longest batch) matrix for every step of a run, whatever it holds: each statistic
    # is one masked reduction over it, and a row's numbers depend on its scores only, never on what else
    # is stacked (the losses are the same bits with the probes on or off; a probe cell holding the same
    # scores as a loss gives that loss's value exactly)
    scores = [_vector(rows[n]) for n in names]
    width = max(lengths)
    mask, count, zeros = _padding(tuple(lengths), width, scores[0].device)
    scores += [zeros] * (ROWS - len(scores))
    if min(lengths) == width:  # one batch size throughout: a plain stack (padding costs more)
        o = fam.output(torch.stack(scores))
    else:
        o = fam.output(torch.nn.utils.rnn.pad_sequence(scores, batch_first=True))
    per_stat = torch.stack(  # the comparisons are promoted to float32 by the stack itself
        [
            o,
            fam.d_fake(o),
            fam.g(o),
            fam.d_real(o),
            o > fam.threshold,
            o <= fam.threshold,
            o > -1.0,  # the hinge's margins: where its losses move at all
            o < 1.0,
        ]
    )
    stats = ("p", "d_fake", "g", "d_real", "above", "at_or_below", "margin_fake", "margin_real")
    means = (torch.where(mask, per_stat, 0.0).sum(-1) / count)[:, : len(names)]  # (stat, row)
    parts = [means.T.reshape(-1)]
    where = {name: i * len(stats) for i, name in enumerate(names)}
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    if extra:
        parts.append(torch.stack([v.detach().float().reshape(()) for v in extra.values()]).to(parts[0].device))
    flat = torch.cat(parts).tolist()

    def get(row: str, stat: str) -> float:
        return flat[where[row] + stats.index(stat)]

    m = {
        C.D_FAKE: get("fake", "d_fake"),
        C.G_LOSS: get("gen", "g"),
        C.ACC_FAKE: get("fake", "at_or_below"),
        C.PROB_FAKE: get("fake", "p"),
        C.PROB_GEN: get("gen", "p"),
    }
    if fam.name == "hinge":
        m[C.MARGIN_FAKE] = get("fake", "margin_fake")
    if real_scores is not None:
        if fam.name == "hinge":
            m[C.MARGIN_REAL] = get("real", "margin_real")
        m[C.D_REAL] = get("real", "d_real")
        m[C.ACC_REAL] = get("real", "above")
        m[C.PROB_REAL] = get("real", "p")
        # the mean of the two halves (what a joint batch reports); the book logs d1, d2 apart
        m[C.D_LOSS] = 0.5 * (m[C.D_REAL] + m[C.D_FAKE])
    for name in cells or {}:
        m[C.probe_key(name, "p")] = get(name, "p")
        m[C.probe_key(name, "d_fake")] = get(name, "d_fake")
        m[C.probe_key(name, "g")] = get(name, "g")
    m.update(zip(extra, flat[len(flat) - len(extra) :]))
    return m


def nonfinite_losses(metrics: dict[str, float]) -> list[str]:
    """The loss components (``loss/*``) of a step's float metrics that are NaN or infinite."""
    return [k for k in C.LOSS_COMPONENTS if k in metrics and not math.isfinite(metrics[k])]


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
        self.last_samples: torch.Tensor | None = None
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
            drawn = self.sample(self.reference.snapshot)
            self.last_samples = drawn.detach()  # for the snapshot's picture at its step (no copy)
            snap = snapshot_metrics(drawn, self.reference)
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

    def final(self) -> tuple[Diagnosis, str]:
        """The verdict on the whole run and the line that says it (``final_line``: with the online verdict
        it replaces, when they differ)."""
        online = self.detector.decision
        verdict = self.detector.final()
        return verdict, final_line(verdict, online)


def final_line(verdict: Diagnosis, online: Diagnosis | None) -> str:
    """The run's verdict at its end, with the online one it replaces when they differ (a collapse that G
    recovered from: "mode-collapse since step 150" while training, "stable" at the end)."""
    line = f"at the end: {verdict.line()}"
    if online is not None and online.verdict != verdict.verdict:
        line += f" (while training: {online.line()})"
    return line


def decision_metrics(d: Diagnosis) -> dict[str, float]:
    m = {C.DIAG_CODE: float(d.code)}
    if d.onset_step is not None:
        m[C.DIAG_ONSET] = float(d.onset_step)
    return m
