"""The training loop and its probes.

One step in the book's order (chapter 10): D on a real half batch, D on a fake half batch
(fakes from ``G.predict``: G's BatchNorm in inference mode), then G on a fresh full batch
labelled "real" through a frozen D. Every loss is the forward pass *before* its own
update, as Keras's ``train_on_batch`` reports it. ``schedule="joint"`` replaces the two D
updates with one on the concatenated batch (the chapter's convergence failure); ``n_critic``
repeats the D part (WGAN), logging its last repetition.

The probe cells (docs/design.md §3, names in ``contract``) evaluate D's and G's fake batches
under D before and after its update, and D's batch under D before its update in the G step's
BatchNorm context too, so timing and BatchNorm context can be told apart. Two cells are the
training forward passes themselves; the others are extra forward passes under ``no_grad`` on a
copy or with BatchNorm running statistics restored afterwards, and draw nothing from the training
random stream — so curves with probes on and off are identical. Each cell's per-sample raw scores
are kept too (``per_sample_probes``; ``gantrack.probes``).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__, checkpoint, cores, data, diversity, figures, models, stepstats, tracking
from . import contract as C
from .config import PRESETS, Config, validate
from .device import autocast, resolve_device
from .diagnosis import describe
from .errors import GantrackError, TrainingDiverged
from .losses import LossFamily, family, gradient_penalty
from .probes import PerSampleRecorder
from .samples import SampleGrid
from .stepstats import RunMonitor, bn_stats_frozen, nonfinite_losses, step_values
from .tracked_run import TrackedRun
from .tracking import open_store


@contextmanager
def d_as_in_g_step(D: nn.Module, cfg: Config):
    """D as the generator step sees it: frozen weights; BatchNorm on the batch's own statistics
    (Keras 2.2.4, the book) or on its moving statistics (tf.keras >= 2), running stats untouched."""
    if cfg.d_bn_in_g_step == "moving":
        D.eval()
        try:
            yield
        finally:
            D.train()
    else:
        with bn_stats_frozen(D):
            yield


@dataclass
class GAN:
    """The trainable state of a run (what a checkpoint holds)."""

    cfg: Config
    fam: LossFamily
    D: nn.Module
    G: nn.Module
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer
    gen: torch.Generator  # the training random stream: real indices, latent points, GP mixing
    real: torch.Tensor | None  # image dataset (N, 1, 28, 28) on the device, or None for toy samplers
    device: torch.device
    d_before: nn.Module | None = None  # copy of D as it computed d_fake (probes only)
    cells: dict[str, torch.Tensor] | None = None  # last step's per-sample raw D scores per probe cell
    per_sample_state: dict | None = None  # per-sample probes restored from a checkpoint
    prior_events: list | None = None  # a resumed run's (key, step, value) logged at own steps, to the checkpoint
    x_gen: torch.Tensor | None = None  # G's batch of the last generator update (div/batch_bins)

    # Random numbers come from the CPU stream and move to the device: same seed, same inputs everywhere.
    def sample_real(self, n: int) -> torch.Tensor:
        if self.real is not None:  # chapter 10 draws real samples with replacement
            return self.real[torch.randint(0, len(self.real), (n,), generator=self.gen).to(self.device)]
        return data.TOYS[self.cfg.dataset](n, self.gen).to(self.device)

    def latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, generator=self.gen).to(self.device)

    def d(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A discriminator's raw scores in the run's precision, returned in the parameters' (float32)."""
        with autocast(self.cfg.precision, self.device):
            return _full(model(x))

    def g(self, z: torch.Tensor) -> torch.Tensor:
        """The generator's output in the run's precision, returned in the parameters' (float32)."""
        with autocast(self.cfg.precision, self.device):
            return _full(self.G(z))


def _full(x: torch.Tensor) -> torch.Tensor:
    """Autocast's bfloat16 outputs back to float32: losses, probes and per-sample scores stay float32."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)


def _load_real(cfg: Config) -> torch.Tensor | None:
    if cfg.dataset in C.IMAGE_DATASETS:
        return data.image_dataset(cfg.dataset, cfg.data_path, cfg.digit)
    return None


def build_gan(cfg: Config, real: torch.Tensor | None = None) -> GAN:
    """Models, optimisers and random stream for ``cfg``; same seed → same initial state.

    ``real``: the image dataset, loaded from the config when not given.
    """
    if real is None:
        real = _load_real(cfg)
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation on the CPU, the same on every device
        torch.manual_seed(cfg.seed)
        D, G = models.build(cfg, 0 if cfg.model == "dcgan" else data.data_dim(cfg.dataset))
    layout = torch.channels_last if cfg.model == "dcgan" and cfg.fast_path else torch.contiguous_format
    D, G = D.to(device, memory_format=layout), G.to(device, memory_format=layout)
    if real is not None:
        real = real.to(device).contiguous(memory_format=layout)
    gan = GAN(
        cfg,
        family(cfg.loss, cfg.clip_eps),
        D,
        G,
        _optimizer(cfg, D.parameters()),
        _optimizer(cfg, G.parameters()),
        torch.Generator().manual_seed(cfg.seed),
        real,
        device,
    )
    if cfg.probes:
        gan.d_before = copy.deepcopy(D).requires_grad_(False)
    return gan


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list, norms: bool) -> torch.Tensor | None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]) if norms else None
    opt.step()
    return norm


def _fakes_for_d(gan: GAN, n: int) -> torch.Tensor:
    """Keras's ``G.predict``: G's BatchNorm on moving statistics, no gradients."""
    with torch.no_grad():
        gan.G.eval()
        fake = gan.g(gan.latent(n))
        gan.G.train()
    return fake


def d_phase(gan: GAN, m: dict) -> dict[str, torch.Tensor]:
    """D's updates (``n_critic`` of them; the last one is the one logged). Returns the last update's
    real and fake batches and D's raw scores of them, taken before that update."""
    cfg, fam, D = gan.cfg, gan.fam, gan.D
    params, half = list(D.parameters()), cfg.half_batch
    for k in range(cfg.n_critic):
        last = k == cfg.n_critic - 1
        real = gan.sample_real(half)
        fake = _fakes_for_d(gan, half)
        if cfg.schedule == "book":  # a real half batch, an update, then a fake half batch, an update
            score_real = gan.d(D, real)
            m[C.GRAD_D_REAL] = _update(gan.opt_d, fam.d_real(fam.output(score_real)).mean(), params, cfg.grad_norms)
            if gan.d_before is not None and last:
                gan.d_before.load_state_dict(D.state_dict())
            score_fake = gan.d(D, fake)
            d_loss = fam.d_fake(fam.output(score_fake)).mean()
        else:  # joint: one update on real + fake, BatchNorm sees the mixed batch
            if gan.d_before is not None and last:
                gan.d_before.load_state_dict(D.state_dict())
            score = gan.d(D, torch.cat([real, fake]))
            score_real, score_fake = score[:half], score[half:]
            out = fam.output(score)
            # the mean over the combined batch, as Keras computes it
            d_loss = 0.5 * (fam.d_real(out[:half]).mean() + fam.d_fake(out[half:]).mean())
        if fam.gradient_penalty:
            gp = gradient_penalty(lambda x: gan.d(D, x), real, fake, gan.gen)
            d_loss = d_loss + cfg.gp_weight * gp
            m[C.GP_LOSS] = gp.detach()
        m[C.GRAD_D] = _update(gan.opt_d, d_loss, params, cfg.grad_norms)
    return {"fake": fake, "score_real": score_real.detach(), "score_fake": score_fake.detach()}


def g_phase(gan: GAN, m: dict) -> dict[str, torch.Tensor]:
    """G's update on a fresh full batch labelled "real", through D frozen as the G step sees it."""
    cfg, fam, D = gan.cfg, gan.fam, gan.D
    x_gen = gan.g(gan.latent(cfg.batch_size))
    D.requires_grad_(False)
    with d_as_in_g_step(D, cfg):
        score_gen = gan.d(D, x_gen)
    m[C.GRAD_G] = _update(gan.opt_g, fam.g(fam.output(score_gen)).mean(), list(gan.G.parameters()), cfg.grad_norms)
    D.requires_grad_(True)
    return {"x_gen": x_gen.detach(), "score_gen": score_gen.detach()}


def probe_cells(gan: GAN, d: dict, g: dict) -> dict[str, torch.Tensor]:
    """The probe cells' raw scores (``contract.CELLS``): two are the training forwards, the others extra
    passes under ``no_grad`` with BatchNorm's running statistics untouched."""
    cfg = gan.cfg
    with torch.no_grad():
        with d_as_in_g_step(gan.D, cfg):
            dbatch_after = gan.d(gan.D, d["fake"])
        with d_as_in_g_step(gan.d_before, cfg):  # D before its update, in the G step's context
            gbatch_before = gan.d(gan.d_before, g["x_gen"])
            if cfg.schedule == "book" and cfg.d_bn_in_g_step == "batch":
                # D scored its fakes alone on their own batch statistics: that forward *is* the G
                # step's context (same weights, same batch, same BatchNorm mode), so reuse it
                dbatch_before_gctx = d["score_fake"]
            else:  # a mixed real+fake batch, or moving statistics in the G step: a context of its own
                dbatch_before_gctx = gan.d(gan.d_before, d["fake"])
    return {
        "dbatch_before": d["score_fake"],
        "dbatch_before_gctx": dbatch_before_gctx,
        "dbatch_after": dbatch_after,
        "gbatch_before": gbatch_before,
        "gbatch_after": g["score_gen"],
    }


def gan_step(gan: GAN) -> dict[str, float]:
    """One training iteration — D's phase, then G's — and every logged quantity as a float
    (``stepstats.step_values``: the same contract ``LoopProbes`` logs from a user's loop).

    With probes on, ``gan.cells`` holds each probe cell's per-sample raw D scores afterwards.
    """
    m: dict[str, torch.Tensor | None] = {}
    d = d_phase(gan, m)
    g = g_phase(gan, m)
    gan.cells = probe_cells(gan, d, g) if gan.d_before is not None else None
    gan.x_gen = g["x_gen"]
    if gan.cfg.grad_norms:
        m[C.WEIGHTS_D] = torch.nn.utils.get_total_norm(list(gan.D.parameters()))
        m[C.WEIGHTS_G] = torch.nn.utils.get_total_norm(list(gan.G.parameters()))
    return step_values(gan.fam, d["score_fake"], g["score_gen"], d["score_real"], gan.cells, extra=m)


def steps_per_epoch(cfg: Config, n_real: int | None) -> int:
    return cfg.batches_per_epoch or (max(1, n_real // cfg.batch_size) if n_real else 100)


def total_steps(cfg: Config, n_real: int | None) -> int:
    return cfg.steps or cfg.epochs * steps_per_epoch(cfg, n_real)


def run_monitor(cfg: Config, gan: GAN) -> RunMonitor:
    """Diversity snapshots (once per epoch by default) and the online detector for a harness run. G's
    snapshot samples come from a random stream of their own, with G's BatchNorm in inference mode as
    the book's ``summarize_performance`` calls ``G.predict``: training is the same with or without."""
    ref = diversity.reference_for(cfg.dataset, gan.real) if cfg.diversity_every >= 0 else None
    every = cfg.diversity_every or steps_per_epoch(cfg, None if gan.real is None else len(gan.real))
    stream = torch.Generator().manual_seed(cfg.seed + 2_000_003)

    def sample(n: int) -> torch.Tensor:
        z = torch.randn(n, cfg.latent_dim, generator=stream).to(gan.device)
        with torch.no_grad():
            gan.G.eval()
            x = diversity.in_chunks(gan.g, z)  # inference mode: each sample independent of its batch
            gan.G.train()
        return x

    return RunMonitor(cfg.loss, ref, sample, every, cfg.stop_on)


def _run_name(cfg: Config) -> str:
    return f"{cfg.scenario}-{cfg.loss}-s{cfg.seed}"


def _description(cfg: Config, steps: int) -> str:
    what = PRESETS[cfg.scenario][0] if cfg.scenario in PRESETS else f"Scenario {cfg.scenario}."
    return (
        f"{what} Loss family `{cfg.loss}`, schedule `{cfg.schedule}`, arch `{cfg.arch}`, width {cfg.width}, "
        f"seed {cfg.seed}, {steps} steps. Every loss component is logged each step (`loss/*`, `acc/*`, "
        f"`prob/*`, `grad/*`{', and the 2x2 `probe/*` grid' if cfg.probes else ''}); "
        "analysis results appear as `osc/*` and `explain/*`."
    )


def train(
    config: Config, tracking_uri: str | None = None, quiet: bool = False, parent_run_id: str | None = None
) -> str:
    """Train ``config`` and log everything to MLflow; returns the run id.

    The tracking store is MLflow's default (sqlite ``./mlflow.db``, artifacts ``./mlruns``)
    unless ``tracking_uri`` or ``MLFLOW_TRACKING_URI`` names another. The process is left as it was
    found: torch's global random stream and thread count are restored; only while training on an
    http(s) store are MLflow's HTTP retry settings (``MLFLOW_HTTP_REQUEST_*``, where unset) shortened
    in the environment, so a dead server costs seconds, not minutes (``tracked_run``). A run that fails
    ends FAILED with the reason in the ``gantrack.failure`` tag; Ctrl-C ends it KILLED. With
    ``checkpoint_every`` > 0 the run can be continued after a crash with ``resume(run_id)``.
    """
    cfg = validate(config)
    real = _load_real(cfg)  # bad data fails here, before any run (or store) exists
    store = open_store(tracking_uri)
    steps = total_steps(cfg, None if real is None else len(real))
    tags = {
        C.TAG_SCENARIO: cfg.scenario,
        C.TAG_LOSS: cfg.loss,
        C.TAG_DATASET: cfg.dataset,
        C.TAG_SEED: str(cfg.seed),
        C.TAG_VERSION: __version__,
        C.TAG_ARCH: cfg.arch,
        C.TAG_PRECISION: cfg.precision,
        C.TAG_DEVICE: str(resolve_device(cfg.device)),
        C.TAG_SCHEDULE: cfg.schedule,
        C.TAG_BN_IN_G: cfg.d_bn_in_g_step,
        C.TAG_ORDER: "d-first",
        C.TAG_HASH: cfg.config_hash(),
        C.TAG_STEPS: str(steps),
        C.TAG_NOTE: _description(cfg, steps),
    }
    commit = tracking.git_commit()
    if commit:
        tags[C.TAG_GIT_COMMIT] = commit
    if parent_run_id:
        tags[C.TAG_PARENT] = parent_run_id
    params = {**cfg.to_dict(), "total_steps": steps}
    run = TrackedRun.create(store, cfg.experiment, tags, run_name=_run_name(cfg), params=params)

    def setup():
        run.log_dict(cfg.to_dict(), C.CONFIG_ARTIFACT)
        return build_gan(cfg, real), 1, {}

    _guarded(cfg, run, steps, quiet, setup)
    return run.run_id


def config_of_run(run) -> Config:
    """The config a run was trained with, rebuilt from its params."""
    from .config import apply_overrides

    known = {f for f in Config.__dataclass_fields__}
    values = {k: v for k, v in run.data.params.items() if k in known}
    return validate(apply_overrides(Config(), values))


def resume(run_id: str, tracking_uri: str | None = None, quiet: bool = False) -> str:
    """Continue a run that died (crash, SIGKILL, lost machine) from its last checkpoint, in the same
    MLflow run. Metrics are flushed only at checkpoints, so no step is logged twice or skipped."""
    store = open_store(tracking_uri)
    try:
        stored = store.client.get_run(run_id)
    except Exception:
        raise GantrackError(f"unknown run id {run_id!r}") from None
    if stored.info.status == "FINISHED":
        raise GantrackError(f"run {run_id} is already FINISHED")
    cfg = config_of_run(stored)
    path = checkpoint.checkpoint_path(cfg, run_id)
    if not path.is_file():
        raise GantrackError(f"run {run_id} has no checkpoint at {path} (train with checkpoint_every > 0)")
    real = _load_real(cfg)
    steps = total_steps(cfg, None if real is None else len(real))
    run = TrackedRun.reopen(store, run_id)

    def setup():
        gan = build_gan(cfg, real)
        state = checkpoint.restore(path, gan)
        gan.prior_events = [tuple(e) for e in state.get("events", [])]
        checkpoint.log_missing_steps(store.client, run_id, state["step"], state["history"], gan.prior_events)
        run.set_tag(C.TAG_RESUMED_FROM, str(state["step"]))
        return gan, state["step"] + 1, {k: list(v) for k, v in state["history"].items()}

    _guarded(cfg, run, steps, quiet, setup)
    return run_id


def _guarded(cfg: Config, run: TrackedRun, steps: int, quiet: bool, setup) -> None:
    """Run the loop; on any failure end the run FAILED (Ctrl-C: KILLED) with the reason as a tag."""
    threads = torch.get_num_threads()
    try:
        with cores.claim(cfg.threads) as n:  # the cores free for this run (gantrack.cores), claimed while it trains
            torch.set_num_threads(n)
            run.set_tag(C.TAG_THREADS, str(n))
            gan, start, history = setup()
            _loop(cfg, run, gan, start, steps, history, quiet)
    except BaseException as e:
        run.fail(e)
        raise
    finally:
        torch.set_num_threads(threads)


def _loop(
    cfg: Config, run: TrackedRun, gan: GAN, start: int, steps: int, history: dict[str, list[float]], quiet: bool
) -> None:
    from tqdm import tqdm

    samples = SampleGrid(gan)
    monitor = run_monitor(cfg, gan)
    events = list(gan.prior_events or [])  # metrics logged at their own steps (checkpointed with the run)
    if start > 1:
        snapshots: dict[str, list[tuple[int, float]]] = {}
        for key, at, value in events:
            snapshots.setdefault(key, []).append((at, value))
        monitor.restore(history, snapshots)
    per_sample = None
    if cfg.probes and cfg.per_sample_probes:
        per_sample = (
            PerSampleRecorder.from_state(gan.per_sample_state, steps)
            if gan.per_sample_state
            else PerSampleRecorder(steps - start + 1)
        )
    ckpt = checkpoint.checkpoint_path(cfg, run.run_id) if cfg.checkpoint_every else None
    # with checkpoints, metrics are written only right after one, so a resumed run re-logs nothing
    flush_every = cfg.checkpoint_every or cfg.flush_every
    bar = tqdm(
        total=steps,
        initial=start - 1,
        disable=quiet,
        file=sys.stderr,
        desc=_run_name(cfg),
        unit="step",
        dynamic_ncols=True,
    )
    with tempfile.TemporaryDirectory(prefix="gantrack-") as tmp:
        tmpdir = Path(tmp)
        t_loop, cpu_loop = time.perf_counter(), time.process_time()
        step = start - 1
        for step in range(start, steps + 1):
            metrics = gan_step(gan)
            if per_sample is not None:
                per_sample.add(step, gan.cells)
            run.log(step, metrics.items())
            for k, v in metrics.items():
                history.setdefault(k, []).append(v)
            bad = nonfinite_losses(metrics)
            if bad:
                run.set_tag(C.TAG_NONFINITE_STEP, str(step), best_effort=True)
                if not cfg.allow_nan:
                    run.flush()
                    raise TrainingDiverged(
                        f"non-finite {', '.join(bad)} at step {step} (rerun with --allow-nan to continue)"
                    )
            # the step's own-step metrics before its checkpoint and flush: a kill loses none of them
            extra, decided = monitor.after_step(step, metrics, gan.x_gen)
            if extra:
                run.log(step, extra.items())
                events.extend((k, step, v) for k, v in extra.items())
            if decided is not None:
                run.set_tag(C.TAG_DIAGNOSIS, decided.verdict, best_effort=True)
                if not quiet:
                    bar.write(f"{_run_name(cfg)}: {decided.line()}")
            if ckpt is not None and step % cfg.checkpoint_every == 0:
                checkpoint.save(ckpt, gan, step, history, per_sample, events)
            if step % flush_every == 0:
                if ckpt is not None:
                    run.flush()  # the store must hold exactly the checkpoint's steps before training goes on
                else:
                    run.flush_in_background()
            if cfg.sample_every and step % cfg.sample_every == 0:
                _log_samples(run, gan, samples, step, tmpdir)
            if not quiet and (step % 10 == 0 or step == steps):
                bar.set_postfix({k[5:]: f"{history[k][-1]:.3f}" for k in (C.D_REAL, C.D_FAKE, C.G_LOSS)}, refresh=False)
            bar.update(1)
            if monitor.stop_reason:
                run.set_tag(C.TAG_STOPPED, monitor.stop_reason, best_effort=True)
                if not quiet:
                    bar.write(f"{_run_name(cfg)}: stopped early (stop_on): {monitor.stop_reason}")
                break
        bar.close()
        last = step
        verdict, said = monitor.final()  # on the whole run: stable and oscillating are said only now
        if not quiet:
            print(f"{_run_name(cfg)}: {said}", file=sys.stderr)
        run.log(last, stepstats.decision_metrics(verdict).items())
        run.flush()  # the last metrics write belongs to the loop's time (a failed one is retried by finish)
        loop_s, loop_cpu_s = time.perf_counter() - t_loop, time.process_time() - cpu_loop

        def final_artifacts():
            # the loop's wall time (training, per-step logging, the last metrics write), for users and the
            # overhead benchmark;
            # CPU seconds of the whole process over the loop: all torch threads and the metrics writer,
            # so work moved off the loop thread still shows
            run.set_tag(C.TAG_LOOP_SECONDS, f"{loop_s:.3f}", best_effort=True)
            run.set_tag(C.TAG_LOOP_CPU_SECONDS, f"{loop_cpu_s:.3f}", best_effort=True)
            _final_artifacts(cfg, run, gan, samples, last, history, tmpdir, per_sample)
            run.set_tag(C.TAG_DIAGNOSIS, verdict.verdict)
            run.set_tag(C.TAG_NOTE, describe(verdict, _description(cfg, steps)))

        run.finish(before_status=final_artifacts)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)


def _log_samples(run: TrackedRun, gan: GAN, samples: SampleGrid, step: int, tmpdir: Path) -> None:
    """The sample grid (the toys: their scatter) as a file under ``samples/`` and in MLflow's image grid
    (key ``samples``: the UI shows it against the step slider). Best effort: training goes on without."""
    path, pixels = samples.save(gan, step, tmpdir)
    tracking.best_effort(run.log_artifact, path, "samples")
    tracking.best_effort(run.log_image, pixels, "samples", step)


def _final_artifacts(
    cfg, run: TrackedRun, gan: GAN, samples: SampleGrid, steps: int, history, tmpdir: Path, per_sample
) -> None:
    """Curves, last samples, weights and per-sample probes of a finished run."""
    if per_sample is not None:
        folder, name = C.PER_SAMPLE_ARTIFACT.rsplit("/", 1)
        run.log_artifact(per_sample.save(tmpdir / name), folder)
    if not cfg.sample_every or steps % cfg.sample_every:
        _log_samples(run, gan, samples, steps, tmpdir)
    per_step = {k: np.asarray(v) for k, v in history.items() if len(v) == len(history[C.G_LOSS])}
    fig = figures.book_plots(np.arange(steps - len(history[C.G_LOSS]) + 1, steps + 1), per_step)
    fig.savefig(tmpdir / "plot_line_plot_loss.png", dpi=100)
    figures.close(fig)
    run.log_artifact(tmpdir / "plot_line_plot_loss.png", "plots")
    wdir = tmpdir / "weights"
    wdir.mkdir()
    torch.save(gan.D.state_dict(), wdir / "discriminator.pt")
    torch.save(gan.G.state_dict(), wdir / "generator.pt")
    run.log_artifacts(wdir, "weights")
