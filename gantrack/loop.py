"""Probes for your own training loop: the harness's metric contract from a few added lines.

    probes = LoopProbes(netD, loss="nsgan", order="d-first-same-batch", outputs="probabilities",
                        experiment="my-dcgan", params=vars(opt))
    with probes:
        for i, (real, _) in enumerate(loader):
            ...                                              # D's forward passes, as before
            probes.d_step(fake.detach(), output_fake, output_real)   # before optimizerD.step()
            optimizerD.step()
            ...                                              # G's forward through D, as before
            probes.g_step(fake, output)                      # the scores errG is computed from
            optimizerG.step()
            probes.end_step()                                # after both updates

Each call reads scores you already computed and adds the extra forward passes of D that the probe
cells need (``contract.CELLS``) under ``no_grad``, with D's BatchNorm running statistics restored
and torch's random stream forked, so your training is bit-identical with and without probes. Two
cells usually repeat scores your loop already has — D's fake batch as the G step sees it is D's own
fake scores when D sees its batches apart, and in ``d-first-same-batch`` D's updated scores of that
batch are G's scores — so those passes run on the first step and every ``REUSE_CHECK_EVERY`` steps as a
check, and every step once the two differ (a combined real+fake batch in D, dropout). The
run gets ``loss/*``, ``acc/*``, ``prob/*`` and ``probe/*`` every step (batched, written on a
background thread, spooled through tracking outages), the per-sample artifact, and the tag
``gantrack.update_order`` that tells ``explain`` which factors the order allows:

- ``d-first``: D updates, then G scores a fresh batch (the book, the Keras DCGAN example). D is
  copied before its update (the only order that needs a copy: G's batch does not exist yet).
- ``d-first-same-batch``: D updates, then G scores D's own fake batch (the pytorch/examples DCGAN:
  ``D_G_z1`` before ``optimizerD.step()``, ``D_G_z2`` after). No copy; ``sampling`` is 1.
- ``g-first``: G updates first through the current D, then D (common in Lightning templates).
  D does not change between the two measurements: ``timing`` is 1.
- ``simultaneous``: both losses from the same forward pass, both updated after it: ``context``,
  ``timing`` and ``sampling`` are 1 when G's scores are D's.

The order of your calls must agree with the declared ``order``: ``d_step`` before ``g_step`` for the
d-first orders, ``g_step`` first for ``g-first``, and a d-first loop whose G step scores D's own fake
batch is ``d-first-same-batch``. A declaration the calls contradict is refused at once (a wrong order
would give a wrong explanation without a word).

**Critic steps (n_critic > 1, WGAN):** call ``d_step`` on every critic update; the probe cells belong to
the last one before G's step (each call replaces the previous one's cells)::

    for _ in range(n_critic):
        ...; probes.d_step(fake, critic(fake), critic(real)); opt_c.step()
    ...; probes.g_step(fake, critic(fake)); opt_g.step(); probes.end_step()

**A conditional D(x, y):** pass the extra inputs D takes with each batch, ``d_step(fake, scores,
real_scores, d_inputs=(y_fake,))`` and ``g_step(fake, scores, d_inputs=(y_gen,))``: the probe passes
call ``D(fake, *d_inputs)``.

**Your own metrics** (``loss/gp``, a learning rate, a FID): ``probes.log_metrics({"loss/gp": gp})`` logs
them into the probes' run at the current step (``run_id`` names the run).

A misuse (``g_step`` before ``d_step`` where the order forbids it, ``end_step`` without both, batch
sizes that do not match, probabilities outside [0, 1] with ``outputs="probabilities"``) raises
``GantrackError`` at once; inside ``with`` the run then ends FAILED with the reason and no per-sample
artifact is written. A step whose losses are not finite is logged, tagged ``gantrack.nonfinite_step``
(the first such step) and warned about once. Metrics are written every ``flush_every`` steps or every
``FLUSH_SECONDS`` seconds, whichever comes first, so a killed script loses seconds of curves.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import __version__
from . import contract as C
from .diagnosis import describe
from .diversity import in_chunks, user_reference
from .errors import GantrackError
from .losses import family
from .messages import warn
from .probes import PerSampleRecorder
from .stepstats import (
    RunMonitor,
    bn_layers,
    bn_stats_frozen,
    decision_metrics,
    nonfinite_losses,
    step_values,
)
from .tracked_run import TrackedRun
from .tracking import best_effort, open_store

ORDERS = {
    "d-first": "D updates, then G on a fresh batch (the book, Keras DCGAN)",
    "d-first-same-batch": "D updates, then G scores D's own fake batch (pytorch/examples DCGAN)",
    "g-first": "G updates first through the current D, then D (Lightning templates)",
    "simultaneous": "both losses from one forward pass, both players updated after it",
}
OUTPUTS = ("logits", "probabilities")
FLUSH_SECONDS = 10.0  # metrics reach the store at least this often (a kill loses seconds, not minutes)
# Two probe passes often repeat scores the loop already has (``_Reuse``); the repeat is checked against a
# real pass on the first step and every REUSE_CHECK_EVERY steps after, and always run once they differ.
REUSE_CHECK_EVERY = 50
CONTEXTS = ("batch", "moving")


class LoopProbes:
    """Probe cells, per-sample scores and the metric contract for a training loop you wrote.

    ``D``: your discriminator (or critic). ``loss``: the loss family (``contract.LOSS_FAMILIES``).
    ``order``: your update order (``ORDERS``). ``outputs``: whether D returns logits / critic values
    (``"logits"``) or probabilities after a sigmoid (``"probabilities"``, converted to logits).
    ``g_context``: how D normalises G's batch in your G step — ``"batch"`` (train mode, the batch's
    own statistics: PyTorch's default) or ``"moving"`` (you call ``D.eval()`` for the G step).
    ``per_sample``: keep every cell's per-sample scores as the run artifact. ``enabled=False`` turns
    every call into a no-op (no run, no forward passes): one flag to train with or without probes.
    The MLflow run is created by ``start()`` (or ``with``) in ``experiment`` of ``tracking_uri`` and
    owned by a ``tracked_run.TrackedRun``, as harness runs are: a run that cannot be created is one
    ``GantrackError`` line; params are cut to MLflow's 6,000 characters; ``gantrack.status`` and the end
    time are set; while the run is open on an http(s) store, MLflow's HTTP retries are shortened in the
    environment (``MLFLOW_HTTP_REQUEST_*`` where unset; restored when the run ends), so a dead server
    costs seconds and the metrics wait in the buffer. ``run_id`` is the run's id once started; one
    ``LoopProbes`` is one run (entering ``with`` again is refused before a second run exists).

    **Sample diversity and the diagnosis** (``gantrack.diversity``, ``gantrack.diagnosis``): with ``G``,
    ``latent`` (the shape of one latent point, e.g. ``(nz, 1, 1)``, or a callable ``n -> z``) and
    ``reference`` (real data as G outputs it: a tensor, or a loader of batches; at most 10,000 samples
    taken), every ``diversity_every`` steps (0: once per pass over the reference at your batch size) the
    probes draw a snapshot of G's samples — without gradients, G's BatchNorm statistics and torch's random
    stream untouched — and log ``div/*``, with the snapshot's picture in MLflow's image grid (key
    ``samples``: 25 images, or the points scattered over the reference). Bad reference data (images outside
    [-1, 1], a shape G does not produce) is one ``GantrackError`` before the run exists. The failure-mode
    detector runs on every step's metrics (and the snapshots): it logs ``diagnosis/*`` and tags
    ``gantrack.diagnosis`` as soon as it decides; ``stop_on=("convergence-failure", "diverged")`` makes
    ``should_stop`` true then (end your loop with ``if probes.should_stop: break``; the tag
    ``gantrack.stopped`` says why). At the end the whole run is diagnosed and the MLflow description starts
    with the verdict.

    Devices and precision follow your loop: the probe passes run D on the device its parameters are on,
    inside whatever autocast context you call ``d_step``/``g_step``/``end_step`` from (call them where
    your forward passes run, and the probes see D in your precision); every score is kept as float32.
    """

    def __init__(
        self,
        D: nn.Module,
        loss: str = "nsgan",
        order: str = "d-first",
        outputs: str = "logits",
        g_context: str = "batch",
        experiment: str = "gantrack",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        params: dict[str, Any] | None = None,
        per_sample: bool = True,
        flush_every: int = 100,
        enabled: bool = True,
        G: nn.Module | None = None,
        latent=None,
        reference=None,
        diversity_every: int = 0,
        stop_on=(),
    ):
        if not isinstance(D, nn.Module) or not any(True for _ in D.parameters()):
            raise GantrackError("LoopProbes needs your discriminator: an nn.Module with parameters")
        for name, value, choices in (
            ("order", order, ORDERS),
            ("outputs", outputs, OUTPUTS),
            ("g_context", g_context, CONTEXTS),
            ("loss", loss, C.LOSS_FAMILIES),
        ):
            if value not in choices:
                raise GantrackError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        if flush_every <= 0:
            raise GantrackError(f"flush_every must be positive, got {flush_every}")
        self.D, self.fam, self.order, self.outputs, self.g_context = D, family(loss), order, outputs, g_context
        self.experiment, self.tracking_uri, self.run_name = experiment, tracking_uri, run_name
        self.params, self.per_sample, self.flush_every = dict(params or {}), per_sample, flush_every
        self.enabled = enabled
        self.G, self.latent, self.reference_data, self.diversity_every = G, latent, reference, diversity_every
        if reference is not None and (not isinstance(G, nn.Module) or latent is None):
            raise GantrackError(
                "diversity snapshots need G and latent as well as reference: LoopProbes(D, G=netG, "
                "latent=(nz, 1, 1), reference=real_images)"
            )
        if diversity_every < 0:
            raise GantrackError(
                f"diversity_every must be >= 0 (0: once per pass over reference), got {diversity_every}"
            )
        self.monitor = RunMonitor(self.fam.name, stop_on=stop_on)  # an unknown mode fails here, before any run
        self._latent_stream = torch.Generator().manual_seed(2_000_003)  # snapshot latents: a stream of their own
        self._stopped_tagged = False
        self.run: TrackedRun | None = None
        self.step = 0
        self._copy = None  # D before its update (order d-first only)
        self._probe_modules = None  # (models, their modules, CUDA devices) for _probing, listed once
        self._recorder: PerSampleRecorder | None = None
        self._last_flush = time.monotonic()
        self._nonfinite = False
        # D's fake batch in D's step seen as the G step sees it = D's own scores (D sees its batches apart,
        # in the context the G step uses); in d-first-same-batch, D's updated scores of that batch = G's
        self._reuse = {"dbatch_before_gctx": _Reuse(), "dbatch_after": _Reuse()}
        self._fewest_critic_calls: int | None = None  # d-first: the fewest d_step calls before a g_step so far
        self._copy_is_current = True
        self._warned_fewer_critic_steps = False
        self._reset()

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id once ``start()`` (or ``with``) has created it."""
        return self.run.run_id if self.run is not None else None

    @property
    def closed(self) -> bool:
        """True once the run has been finished or failed."""
        return self.run is not None and self.run.closed

    # --- the run ------------------------------------------------------------------------------------
    def start(self) -> str:
        """Create the MLflow run; returns its id."""
        if not self.enabled:
            return ""
        if self.run is not None:
            raise GantrackError(f"LoopProbes already has run {self.run_id}: make a new LoopProbes for a new run")
        tags = {
            C.TAG_LOSS: self.fam.name,
            C.TAG_ORDER: self.order,
            C.TAG_KIND: "user-loop",
            C.TAG_BN_IN_G: self.g_context,
            C.TAG_VERSION: __version__,
            C.TAG_NOTE: f"Your own loop with gantrack probes ({ORDERS[self.order]}).",
        }
        if self.reference_data is not None:  # bad reference data fails here, before the run exists
            self.monitor.reference = user_reference(self.reference_data)
            self.monitor.sample = self._sample
            self.monitor.reference.check(self._sample(2))
        self._note = tags[C.TAG_NOTE]
        store = open_store(self.tracking_uri)
        self.run = TrackedRun.create(store, self.experiment, tags, run_name=self.run_name, params=self.params)
        self._recorder = PerSampleRecorder(1024) if self.per_sample else None
        return self.run.run_id

    def finish(self) -> None:
        """Write what is pending and the per-sample artifact; the run ends FINISHED."""
        if not self.enabled:
            return
        self._need_run()
        with tempfile.TemporaryDirectory(prefix="gantrack-loop-") as tmp:

            def per_sample_artifact():
                if self._recorder is not None and self._recorder.n:
                    folder, name = C.PER_SAMPLE_ARTIFACT.rsplit("/", 1)
                    self.run.log_artifact(self._recorder.save(Path(tmp) / name), folder)

            def final():
                per_sample_artifact()
                verdict, said = self.monitor.final()
                warn("run %s: %s", self.run_id, said)
                self.run.log(max(self.step, 1), decision_metrics(verdict).items())
                self.run.flush()
                self.run.set_tag(C.TAG_DIAGNOSIS, verdict.verdict)
                self.run.set_tag(C.TAG_NOTE, describe(verdict, self._note))

            self.run.finish(before_status=final)

    def fail(self, reason: BaseException | str) -> None:
        """End the run FAILED (KILLED for Ctrl-C) with the reason in ``gantrack.failure``."""
        if not self.enabled:
            return
        self._need_run()
        self.run.fail(reason)

    def __enter__(self) -> LoopProbes:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.finish()
        else:
            self.fail(exc)
        return False

    # --- the three calls --------------------------------------------------------------------------
    def d_step(
        self,
        fake: torch.Tensor,
        fake_scores: torch.Tensor,
        real_scores: torch.Tensor | None = None,
        d_inputs: tuple = (),
    ) -> None:
        """D's forward on its fake batch (and real batch), **before** D's optimiser step.

        ``fake``: the fake images D was given; ``fake_scores``/``real_scores``: what D returned;
        ``d_inputs``: D's other inputs for this fake batch (a conditional D's labels). With critic steps,
        call it on each one: the last call before ``g_step`` is the one the probe cells keep.
        """
        if not self.enabled:
            return
        self._need_run()
        if self._g is not None:
            if self.order in ("d-first", "d-first-same-batch"):
                raise GantrackError(f"g_step() came before d_step() but the order is {self.order!r}")
            if self._d is not None:
                raise GantrackError(
                    "d_step() called again after g_step(): call end_step() after both updates (with critic "
                    f"steps and order {self.order!r}, call d_step() on the first critic update after G's)"
                )
        elif self.order == "g-first" and self._d is None:
            raise GantrackError(
                "d_step() came before g_step() but the order is 'g-first': your loop updates D first "
                "(declare order='d-first', or 'd-first-same-batch' if G's step scores D's own fake batch)"
            )
        if self.order == "d-first":
            # G's batch does not exist yet: keep D as it is now. Its G-step-context pass on this batch waits
            # for g_step, on the copy (the same weights and buffers). With critic steps only the last
            # d_step before g_step counts, so the others are kept as given and checked only if they turn
            # out to be the last; and once a step has shown how many critic steps come before G's, the
            # copy is taken from that many on (a step with fewer is told apart in g_step)
            self._critic_calls += 1
            if self._fewest_critic_calls is None or self._critic_calls >= self._fewest_critic_calls:
                self._snapshot()
                self._snapshot_call = self._critic_calls
            self._d = None
            self._d_given = (fake, fake_scores, real_scores, d_inputs)
            if self.step == 0:  # the first step checks every call where it is made
                self._d = self._d_cells(*self._d_given)
            return
        d = self._d = self._d_cells(fake, fake_scores, real_scores, d_inputs)
        d_pass = lambda: self._in_g_context(self.D, d["fake"], d["inputs"])  # noqa: E731
        d["dbatch_before_gctx"] = self._cell("dbatch_before_gctx", d["dbatch_before"], d_pass)

    def _d_cells(self, fake, fake_scores, real_scores, d_inputs) -> dict:
        """A d_step's arguments, checked, as the step's D cells (the G-context cell still to come)."""
        return {
            "fake": fake.detach(),
            "inputs": self._inputs(d_inputs, len(fake)),
            "dbatch_before": self._scores(fake_scores, len(fake), "fake_scores"),
            "dbatch_before_gctx": None,
            "real": None if real_scores is None else self._scores(real_scores, None, "real_scores"),
        }

    def g_step(self, fake: torch.Tensor, scores: torch.Tensor, d_inputs: tuple = ()) -> None:
        """D's scores of G's batch in your G step (the ones your generator loss is computed from);
        ``d_inputs``: D's other inputs for this batch (a conditional D's labels)."""
        if not self.enabled:
            return
        self._need_run()
        if self._g is not None:
            raise GantrackError("g_step() called twice in one step: call end_step() after both updates")
        if self.order == "d-first" and self._d_given is not None:
            self._last_critic_step()
        if self.order in ("d-first", "d-first-same-batch") and self._d is None:
            raise GantrackError(f"g_step() without d_step() before it: the order is {self.order!r}")
        scores = self._scores(scores, len(fake), "scores")
        fake, d_inputs = fake.detach(), self._inputs(d_inputs, len(fake))
        g = {"fake": fake, "inputs": d_inputs, "scores": scores}
        if self.order in ("d-first", "d-first-same-batch"):  # D has been updated: these are the "after" cells
            same = fake.shape == self._d["fake"].shape and torch.equal(fake, self._d["fake"])
            if self.order == "d-first" and same:
                raise GantrackError(
                    "order 'd-first' but g_step() got the same batch as d_step(): your G step scores D's own "
                    "fake batch, declare order='d-first-same-batch'"
                )
            if self.order == "d-first-same-batch" and not same:
                raise GantrackError(
                    "order 'd-first-same-batch' but g_step() got a different batch than d_step(): use order 'd-first'"
                )
            g["gbatch_after"] = scores
            d = self._d
            if self.order == "d-first":
                with self._probing():
                    g["dbatch_after"] = self._in_g_context(self.D, d["fake"], d["inputs"])
                    if self._copy_is_current:
                        g["gbatch_before"] = self._in_g_context(self._copy, fake, d_inputs)
                if self._copy_is_current:
                    d_pass = lambda: self._in_g_context(self._copy, d["fake"], d["inputs"])  # noqa: E731
                    d["dbatch_before_gctx"] = self._cell("dbatch_before_gctx", d["dbatch_before"], d_pass)
                else:  # D before its last critic update was not kept (see _last_critic_step): not measured
                    g["gbatch_before"] = torch.full_like(scores, math.nan)
                    d["dbatch_before_gctx"] = torch.full_like(d["dbatch_before"], math.nan)
            else:
                g_pass = lambda: self._in_g_context(self.D, fake, d_inputs)  # noqa: E731
                g["dbatch_after"] = self._cell("dbatch_after", scores, g_pass)
                g["gbatch_before"] = d["dbatch_before_gctx"]
        else:  # g-first, simultaneous: D has not been updated yet
            g["gbatch_before"] = scores
        self._g = g

    def end_step(self, step: int | None = None) -> dict[str, float]:
        """After both optimiser steps: the remaining cells, then this step's metrics are logged (and
        returned: the contract's keys, ``stepstats.step_values``)."""
        if not self.enabled:
            return {}
        self._need_run()
        if self._d is None or self._g is None:
            d_seen = self._d if self._d is not None else self._d_given
            missing = " and ".join(n for n, v in (("d_step()", d_seen), ("g_step()", self._g)) if v is None)
            raise GantrackError(f"end_step() without {missing} in this step")
        d, g = self._d, self._g
        if self.order in ("g-first", "simultaneous"):  # D has now been updated
            with self._probing():
                g["dbatch_after"] = self._in_g_context(self.D, d["fake"], d["inputs"])
                g["gbatch_after"] = self._in_g_context(self.D, g["fake"], g["inputs"])
        self.step = self.step + 1 if step is None else int(step)
        cells = {
            "dbatch_before": d["dbatch_before"],
            "dbatch_before_gctx": d["dbatch_before_gctx"],
            "dbatch_after": g["dbatch_after"],
            "gbatch_before": g["gbatch_before"],
            "gbatch_after": g["gbatch_after"],
        }
        metrics = step_values(self.fam, d["dbatch_before"], g["scores"], d["real"], cells)
        self.run.log(self.step, metrics.items())
        if self._recorder is not None:
            self._recorder.add(self.step, cells)
        if self.monitor.reference is not None and not self.monitor.every:  # once per pass over the reference
            self.monitor.every = self.diversity_every or max(1, self.monitor.reference.n // len(d["fake"]))
        extra, decided = self.monitor.after_step(self.step, metrics, g["fake"])
        if extra:
            self.run.log(self.step, extra.items())
        if C.DIV_COVERAGE in extra and self.monitor.last_samples is not None:
            # the snapshot's picture in MLflow's image grid (key "samples", on the step slider): what the
            # diversity numbers and the verdict are checked against
            from .samples import snapshot_image  # matplotlib (via figures) only once a snapshot is taken

            image = snapshot_image(self.monitor.last_samples, self.monitor.reference.balls, self.step)
            if image is not None:
                best_effort(self.run.log_image, image, "samples", self.step)
        if decided is not None:
            self.run.set_tag(C.TAG_DIAGNOSIS, decided.verdict, best_effort=True)
            warn("run %s: %s", self.run_id, decided.line())
        if self.monitor.stop_reason and not self._stopped_tagged:
            self._stopped_tagged = True
            self.run.set_tag(C.TAG_STOPPED, self.monitor.stop_reason, best_effort=True)
        bad = nonfinite_losses(metrics)
        if bad and not self._nonfinite:  # logged as it is, said once
            self._nonfinite = True
            self.run.set_tag(C.TAG_NONFINITE_STEP, str(self.step), best_effort=True)
            warn("non-finite %s at step %d of run %s (logged as it is)", ", ".join(bad), self.step, self.run_id)
        now = time.monotonic()
        if self.step % self.flush_every == 0 or now - self._last_flush > FLUSH_SECONDS:
            self.run.flush_in_background()
            self._last_flush = now
        self._reset()
        return metrics

    @property
    def should_stop(self) -> bool:
        """True once the detector has decided a failure mode named in ``stop_on``: end your loop
        (``if probes.should_stop: break``); the run ends FINISHED with ``gantrack.stopped`` saying why."""
        return self.monitor.stop_reason is not None

    @property
    def diagnosis(self):
        """The detector's latest decision (``gantrack.diagnosis.Diagnosis``), or None."""
        return self.monitor.detector.decision

    def _sample(self, n: int) -> torch.Tensor:
        """n of G's samples for a diversity snapshot: no gradients, G's BatchNorm statistics and torch's
        random stream untouched, latent points from a stream of the probes' own."""
        device = next(self.G.parameters()).device
        with torch.no_grad(), torch.random.fork_rng(devices=[]), bn_stats_frozen(self.G):
            if callable(self.latent):
                z = self.latent(n)
            else:
                shape = (self.latent,) if isinstance(self.latent, int) else tuple(self.latent)
                z = torch.randn(n, *shape, generator=self._latent_stream)
            z = z.to(device)
            # a G whose BatchNorm uses batch statistics sees the whole snapshot as one batch
            if any(bn.training for bn in bn_layers(self.G)):
                return self.G(z).detach()
            return in_chunks(self.G, z).detach()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Your own metrics (``loss/gp``, a learning rate, ...) into the probes' run, at ``step``
        (default: the step in progress, i.e. the one the next ``end_step`` logs)."""
        if not self.enabled:
            return
        self._need_run()
        values = []
        for key, value in metrics.items():
            try:
                values.append((str(key), float(value)))
            except (TypeError, ValueError):
                raise GantrackError(f"log_metrics: {key!r} is not a number ({type(value).__name__})") from None
        self.run.log(self.step + 1 if step is None else int(step), values)

    # --- internals ------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._d: dict | None = None
        self._g: dict | None = None
        self._d_given: tuple | None = None  # d-first: the latest d_step's arguments, as given
        self._critic_calls = 0
        self._snapshot_call = 0

    def _last_critic_step(self) -> None:
        """g_step in order d-first: the latest d_step was the last critic update; check its arguments
        and see whether the copy holds D from before that update."""
        if self._d is None:
            self._d = self._d_cells(*self._d_given)
        self._copy_is_current = self._snapshot_call == self._critic_calls
        if not self._copy_is_current and not self._warned_fewer_critic_steps:
            self._warned_fewer_critic_steps = True
            warn(
                "run %s, step %d: %d critic steps before G's where earlier steps had at least %d; D before the "
                "last one was not kept, so this step's before-update probe cells are NaN (said once)",
                self.run_id,
                self.step + 1,
                self._critic_calls,
                self._fewest_critic_calls,
            )
        calls = self._critic_calls
        self._fewest_critic_calls = (
            calls if self._fewest_critic_calls is None else min(self._fewest_critic_calls, calls)
        )

    @staticmethod
    def _inputs(d_inputs, n: int) -> tuple:
        """D's extra inputs as a tuple of detached tensors (or other values), one row per sample."""
        if not isinstance(d_inputs, (tuple, list)):
            d_inputs = (d_inputs,)
        out = []
        for i, v in enumerate(d_inputs):
            if isinstance(v, torch.Tensor):
                if v.ndim and len(v) != n:
                    raise GantrackError(f"d_inputs[{i}] has {len(v)} rows for a batch of {n} samples")
                v = v.detach()
            out.append(v)
        return tuple(out)

    def _need_run(self) -> None:
        if self.run is None:
            raise GantrackError("LoopProbes has no run: use `with LoopProbes(...) as probes:` or call start()")
        if self.run.closed:
            raise GantrackError(f"run {self.run_id} is already closed")

    def _scores(self, scores: torch.Tensor, n: int | None, name: str) -> torch.Tensor:
        """Raw scores (logits / critic values) as a detached float tensor of one value per sample."""
        if not isinstance(scores, torch.Tensor):
            raise GantrackError(f"{name} must be a tensor of D's outputs, got {type(scores).__name__}")
        s = scores.detach().reshape(len(scores), -1)
        if s.shape[1] != 1:
            raise GantrackError(f"{name}: D must give one score per sample, got shape {tuple(scores.shape)}")
        if n is not None and len(s) != n:
            raise GantrackError(f"{name} has {len(s)} scores for a batch of {n} samples")
        s = s[:, 0].float()
        if self.outputs == "probabilities":
            lo, hi = torch.aminmax(s)
            lo, hi = float(lo), float(hi)
            if lo < 0 or hi > 1:  # NaN passes: a non-finite score is logged and tagged, not refused
                raise GantrackError(
                    f"{name} has values in [{lo:.3g}, {hi:.3g}] but outputs='probabilities' needs D(x) in [0, 1]: "
                    "pass outputs='logits' if D returns scores before a sigmoid"
                )
            s = torch.logit(s.clamp(1e-7, 1 - 1e-7))  # the Keras/BCE clip, so saturated outputs stay finite
        return s

    def _in_g_context(self, model: nn.Module, x: torch.Tensor, d_inputs: tuple = ()) -> torch.Tensor:
        """``model``'s raw scores of ``x`` as the G step sees them (batch or moving statistics)."""
        out = model(x, *d_inputs)
        if self.outputs == "probabilities":
            out = torch.logit(out.clamp(1e-7, 1 - 1e-7))
        return out.detach().reshape(len(x)).float()

    def _cell(self, name: str, known: torch.Tensor, probe_pass) -> torch.Tensor:
        """A probe cell whose scores the loop may already have (``known``): the pass runs when a check is
        due or once the two have differed; otherwise ``known`` is the cell."""
        reuse = self._reuse[name]
        if not reuse.check_due(self.step):
            return known
        with self._probing():
            scores = probe_pass()
        reuse.record(scores, known, self.step)
        return scores

    @contextmanager
    def _probing(self):
        """No gradients, BatchNorm running statistics and torch's random stream as they were, D's
        mode as the G step uses it (and restored)."""
        models = [m for m in (self.D, self._copy) if m is not None]
        if self._probe_modules is None or [id(m) for m in self._probe_modules[0]] != [id(m) for m in models]:
            # listed once (walking the module tree costs more than a small critic's forward pass); models
            # that override train() keep it being called, since the override may pin some layers' modes
            subs = [mod for m in models for mod in m.modules()]
            plain = all(type(mod).train is nn.Module.train for mod in subs)
            devices = [p.device.index for p in self.D.parameters() if p.device.type == "cuda"][:1]
            bns = [mod for mod in subs if isinstance(mod, _BatchNorm)]
            self._probe_modules = (models, subs if plain else None, devices, bns)
        models, subs, devices, bns = self._probe_modules
        want = self.g_context == "batch"
        if subs is not None:
            changed = [mod for mod in subs if mod.training != want]
            modes = None
        else:
            modes = [m.training for m in models]
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices), bn_stats_frozen(layers=bns):
                if subs is not None:
                    for mod in changed:
                        mod.training = want
                else:
                    for m in models:
                        m.train(want)
                yield
        finally:
            if subs is not None:  # each module back to its own mode
                for mod in changed:
                    mod.training = not want
            else:
                for m, mode in zip(models, modes):
                    m.train(mode)

    def _snapshot(self) -> None:
        """The copy takes D's weights and buffers (no autograd history: the copy is never trained)."""
        if self._copy is None:
            self._copy = copy.deepcopy(self.D).requires_grad_(False)
            # listed once: walking the module tree on every critic step costs more than the copy itself
            # (training updates these tensors in place; the optimiser holds the same ones)
            self._pairs = (
                list(self._copy.parameters()) + list(self._copy.buffers()),
                list(self.D.parameters()) + list(self.D.buffers()),
            )
        with torch.no_grad():
            torch._foreach_copy_(*self._pairs)


class _Reuse:
    """Whether a probe cell may be taken from scores the loop already computed.

    Checked against a real pass at the first step and every ``REUSE_CHECK_EVERY`` steps; once the
    two differ (D sees a combined batch in its step, the G step uses another BatchNorm context,
    dropout), the pass runs every step for the rest of the run. Equal means float32-close
    (``rtol=1e-5``, ``atol=1e-6``): the same forward pass with and without autograd.
    """

    def __init__(self):
        self.differs = False
        self.checked_at: int | None = None

    def check_due(self, step: int) -> bool:
        return self.differs or self.checked_at is None or step - self.checked_at >= REUSE_CHECK_EVERY

    def record(self, scores: torch.Tensor, known: torch.Tensor, step: int) -> None:
        self.checked_at = step
        if not self.differs:
            same = scores.shape == known.shape and torch.allclose(scores, known, rtol=1e-5, atol=1e-6, equal_nan=True)
            self.differs = not same
