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
import math
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import __version__, data, figures, models, tracking
from . import contract as C
from .config import PRESETS, Config, validate
from .device import autocast, resolve_device
from .errors import GantrackError, TrainingDiverged, first_line
from .losses import LossFamily, family, gradient_penalty
from .probes import PerSampleRecorder


@contextmanager
def bn_stats_frozen(module: nn.Module):
    """Run forward passes in train mode without moving BatchNorm's running statistics.

    The layers get scratch copies of their buffers for the duration and the originals back
    afterwards; the originals are never written, so autograd's saved-tensor versions stay valid.
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm)]
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


def gan_step(gan: GAN) -> dict[str, torch.Tensor]:
    """One training iteration; returns every logged quantity as a 0-dim tensor.

    With probes on, ``gan.cells`` holds each probe cell's per-sample raw D scores afterwards.
    """
    cfg, fam, D, G = gan.cfg, gan.fam, gan.D, gan.G
    d_params, g_params = list(D.parameters()), list(G.parameters())
    half, m = cfg.half_batch, {}
    for k in range(cfg.n_critic):
        last = k == cfg.n_critic - 1
        real = gan.sample_real(half)
        z = gan.latent(half)
        with torch.no_grad():  # Keras G.predict: BatchNorm on moving statistics
            G.eval()
            fake = gan.g(z)
            G.train()
        if cfg.schedule == "book":
            out_real = fam.output(gan.d(D, real))
            d_real = fam.d_real(out_real).mean()
            m["grad/d_real_norm"] = _update(gan.opt_d, d_real, d_params, cfg.grad_norms)
            if gan.d_before is not None and last:
                gan.d_before.load_state_dict(D.state_dict())
            score_fake = gan.d(D, fake)
            out_fake = fam.output(score_fake)
            d_fake = fam.d_fake(out_fake).mean()
            d_loss = d_fake
        else:  # joint: one update on real + fake, BatchNorm sees the mixed batch
            if gan.d_before is not None and last:
                gan.d_before.load_state_dict(D.state_dict())
            score = gan.d(D, torch.cat([real, fake]))
            out = fam.output(score)
            out_real, out_fake, score_fake = out[:half], out[half:], score[half:]
            d_real, d_fake = fam.d_real(out_real).mean(), fam.d_fake(out_fake).mean()
            d_loss = 0.5 * (d_real + d_fake)  # mean over the combined batch, as Keras computes it
        if fam.gradient_penalty:
            gp = gradient_penalty(lambda x: gan.d(D, x), real, fake, gan.gen)
            d_loss = d_loss + cfg.gp_weight * gp
            m[C.GP_LOSS] = gp.detach()
        m["grad/d_norm"] = _update(gan.opt_d, d_loss, d_params, cfg.grad_norms)

    # generator step: fresh latent batch, labels "real", D frozen
    z_gen = gan.latent(cfg.batch_size)
    D.requires_grad_(False)
    x_gen = gan.g(z_gen)
    with d_as_in_g_step(D, cfg):
        score_gen = gan.d(D, x_gen)
    out_gen = fam.output(score_gen)
    g = fam.g(out_gen).mean()
    m["grad/g_norm"] = _update(gan.opt_g, g, g_params, cfg.grad_norms)
    D.requires_grad_(True)

    out_real, out_fake, out_gen = out_real.detach(), out_fake.detach(), out_gen.detach()
    m.update(
        {
            C.D_REAL: d_real.detach(),
            C.D_FAKE: d_fake.detach(),
            # the mean of the two halves (what a joint batch reports); the book logs d1, d2 apart
            C.D_LOSS: 0.5 * (d_real.detach() + d_fake.detach()),
            C.G_LOSS: g.detach(),
            C.ACC_REAL: (out_real > fam.threshold).float().mean(),
            C.ACC_FAKE: (out_fake <= fam.threshold).float().mean(),
            C.PROB_REAL: out_real.mean(),
            C.PROB_FAKE: out_fake.mean(),
            C.PROB_GEN: out_gen.mean(),
        }
    )
    if gan.d_before is not None:
        x_gen = x_gen.detach()
        with torch.no_grad():  # the probe passes: no gradients, running statistics untouched (scratch)
            with d_as_in_g_step(D, cfg):
                score_dbatch_after = gan.d(D, fake)
            with d_as_in_g_step(gan.d_before, cfg):  # D before its update, in the G step's context
                score_gbatch_before = gan.d(gan.d_before, x_gen)
                if cfg.schedule == "book" and cfg.d_bn_in_g_step == "batch":
                    # D scored its fakes alone on their own batch statistics: that forward *is* the G
                    # step's context (same weights, same batch, same BatchNorm mode), so reuse it
                    score_dbatch_before_gctx = score_fake.detach()
                else:  # a mixed real+fake batch, or moving statistics in the G step: a context of its own
                    score_dbatch_before_gctx = gan.d(gan.d_before, fake)
        gan.cells = {
            "dbatch_before": score_fake.detach(),
            "dbatch_before_gctx": score_dbatch_before_gctx,
            "dbatch_after": score_dbatch_after,
            "gbatch_before": score_gbatch_before,
            "gbatch_after": score_gen.detach(),
        }
        for name, score in gan.cells.items():
            out = fam.output(score)
            m[C.probe_key(name, "p")] = out.mean()
            m[C.probe_key(name, "d_fake")] = fam.d_fake(out).mean()
            m[C.probe_key(name, "g")] = fam.g(out).mean()
    if cfg.grad_norms:
        m["weights/d_norm"] = torch.nn.utils.get_total_norm(d_params)
        m["weights/g_norm"] = torch.nn.utils.get_total_norm(g_params)
    return {k: v for k, v in m.items() if v is not None}


def total_steps(cfg: Config, n_real: int | None) -> int:
    if cfg.steps:
        return cfg.steps
    per_epoch = cfg.batches_per_epoch or (max(1, n_real // cfg.batch_size) if n_real else 100)
    return cfg.epochs * per_epoch


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


class _Samples:
    """Sample grids from a fixed latent batch (its own random stream: the training stream is untouched)."""

    def __init__(self, gan: GAN, n: int = 25):
        g = torch.Generator().manual_seed(gan.cfg.seed + 1_000_003)
        self.z = torch.randn(n if gan.real is not None else 500, gan.cfg.latent_dim, generator=g)
        self.reference = None if gan.real is not None else data.TOYS[gan.cfg.dataset](500, g).numpy()

    def save(self, gan: GAN, step: int, folder: Path) -> Path:
        with torch.no_grad():
            gan.G.eval()
            x = gan.g(self.z.to(gan.device)).cpu().numpy()
            gan.G.train()
        path = folder / f"samples_step{step:06d}.png"
        if self.reference is None:
            n, side = len(x), int(math.ceil(math.sqrt(len(x))))
            tiles = np.ones((side * side, 28, 28), dtype=np.float32)
            tiles[:n] = (x[:, 0] + 1) / 2
            grid = tiles.reshape(side, side, 28, 28).transpose(0, 2, 1, 3).reshape(side * 28, side * 28)
            figures.imsave(path, 1 - grid, cmap="gray", vmin=0, vmax=1)
        else:
            fig = figures.scatter_samples(self.reference, x, f"step {step}")
            fig.savefig(path, dpi=80)
            figures.close(fig)
        return path


def train(
    config: Config, tracking_uri: str | None = None, quiet: bool = False, parent_run_id: str | None = None
) -> str:
    """Train ``config`` and log everything to MLflow; returns the run id.

    The tracking store is MLflow's default (sqlite ``./mlflow.db``, artifacts ``./mlruns``)
    unless ``tracking_uri`` or ``MLFLOW_TRACKING_URI`` names another. The process is left as it was
    found: torch's global random stream and thread count are restored; only while training on an
    http(s) store are MLflow's HTTP retry settings (``MLFLOW_HTTP_REQUEST_*``, where unset) shortened
    in the environment, so a dead server costs seconds, not minutes. A run that fails ends
    FAILED with the reason in the ``gantrack.failure`` tag; Ctrl-C ends it KILLED. With
    ``checkpoint_every`` > 0 the run can be continued after a crash with ``resume(run_id)``.
    """
    from mlflow.entities import Param, RunTag

    cfg = validate(config)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    real = _load_real(cfg)  # bad data fails here, before any run exists
    mlclient = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(mlclient, cfg.experiment)
    steps = total_steps(cfg, None if real is None else len(real))
    tags = {
        "gantrack.scenario": cfg.scenario,
        "gantrack.loss": cfg.loss,
        "gantrack.dataset": cfg.dataset,
        "gantrack.seed": str(cfg.seed),
        "gantrack.version": __version__,
        C.TAG_ARCH: cfg.arch,
        C.TAG_PRECISION: cfg.precision,
        C.TAG_DEVICE: str(resolve_device(cfg.device)),
        "gantrack.schedule": cfg.schedule,
        "gantrack.d_bn_in_g_step": cfg.d_bn_in_g_step,
        C.TAG_ORDER: "d-first",
        "gantrack.config_hash": cfg.config_hash(),
        "gantrack.steps": str(steps),
        "mlflow.note.content": _description(cfg, steps),
    }
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    try:
        run = tracking.retry(mlclient.create_run, exp_id, tags=tags, run_name=_run_name(cfg))
    except Exception as e:
        raise GantrackError(f"cannot create a run in {uri}: {first_line(e)}") from None
    run_id = run.info.run_id

    def setup():
        params = [Param(k, v) for k, v in tracking.flatten(cfg.to_dict()).items()]
        params.append(Param("total_steps", str(steps)))
        tracking.retry(mlclient.log_batch, run_id, params=params, tags=[RunTag("gantrack.status", "training")])
        tracking.retry(mlclient.log_dict, run_id, cfg.to_dict(), "config.json")
        return build_gan(cfg, real), 1, {}

    _guarded(cfg, mlclient, run_id, uri, steps, quiet, setup)
    return run_id


def config_of_run(mlclient, run) -> Config:
    """The config a run was trained with, rebuilt from its params."""
    known = {f for f in Config.__dataclass_fields__}
    values = {k: v for k, v in run.data.params.items() if k in known}
    from .config import apply_overrides

    return validate(apply_overrides(Config(), values))


def resume(run_id: str, tracking_uri: str | None = None, quiet: bool = False) -> str:
    """Continue a run that died (crash, SIGKILL, lost machine) from its last checkpoint, in the same
    MLflow run. Metrics are flushed only at checkpoints, so no step is logged twice or skipped."""
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    mlclient = tracking.client(uri)
    try:
        run = mlclient.get_run(run_id)
    except Exception:
        raise GantrackError(f"unknown run id {run_id!r}") from None
    if run.info.status == "FINISHED":
        raise GantrackError(f"run {run_id} is already FINISHED")
    cfg = config_of_run(mlclient, run)
    path = checkpoint_path(cfg, run_id)
    if not path.is_file():
        raise GantrackError(f"run {run_id} has no checkpoint at {path} (train with checkpoint_every > 0)")
    real = _load_real(cfg)
    steps = total_steps(cfg, None if real is None else len(real))

    def setup():
        gan = build_gan(cfg, real)
        state = torch.load(path, map_location="cpu", weights_only=True)
        gan.D.load_state_dict(state["D"])
        gan.G.load_state_dict(state["G"])
        gan.opt_d.load_state_dict(state["opt_d"])
        gan.opt_g.load_state_dict(state["opt_g"])
        gan.gen.set_state(state["gen"])  # the only stream training draws from
        _log_missing_steps(mlclient, run_id, state["step"], state["history"])
        tracking.retry(mlclient.update_run, run_id, status="RUNNING")
        tracking.retry(mlclient.set_tag, run_id, "gantrack.resumed_from_step", str(state["step"]))
        gan.per_sample_state = state.get("per_sample")
        return gan, state["step"] + 1, {k: list(v) for k, v in state["history"].items()}

    _guarded(cfg, mlclient, run_id, uri, steps, quiet, setup)
    return run_id


def _log_missing_steps(mlclient, run_id: str, ckpt_step: int, history: dict) -> None:
    """A kill between writing a checkpoint and flushing its steps' metrics leaves the store behind the
    checkpoint: log those steps from the checkpoint's own history, so no step is skipped or doubled."""
    from mlflow.entities import Metric

    logged = tracking.retry(mlclient.get_metric_history, run_id, C.G_LOSS)
    last = max((m.step for m in logged), default=0)
    if last >= ckpt_step:
        return
    ts = int(time.time() * 1000)
    batch = [
        Metric(key, float(values[step - 1]), ts, step)
        for step in range(last + 1, ckpt_step + 1)
        for key, values in history.items()
        if len(values) >= step
    ]
    for i in range(0, len(batch), 1000):
        tracking.retry(mlclient.log_batch, run_id, metrics=batch[i : i + 1000])


def checkpoint_path(cfg: Config, run_id: str) -> Path:
    import os

    root = Path(
        cfg.checkpoint_dir
        or os.environ.get("GANTRACK_CHECKPOINT_DIR")
        or Path.home() / ".cache" / "gantrack" / "checkpoints"
    )
    return root / f"{run_id}.pt"


def _save_checkpoint(path: Path, gan: GAN, step: int, history: dict, per_sample: PerSampleRecorder | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "D": gan.D.state_dict(),
            "G": gan.G.state_dict(),
            "opt_d": gan.opt_d.state_dict(),
            "opt_g": gan.opt_g.state_dict(),
            "gen": gan.gen.get_state(),
            "history": history,
            "per_sample": per_sample.state() if per_sample else None,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def _guarded(cfg, mlclient, run_id, uri, steps, quiet, setup) -> None:
    """Run the loop; on any failure end the run FAILED (Ctrl-C: KILLED) with the reason as a tag."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    buffer = tracking.MetricBuffer(mlclient, run_id, uri=uri)
    try:
        with tracking.fail_fast_http(uri):
            gan, start, history = setup()
            _loop(cfg, mlclient, run_id, buffer, gan, start, steps, history, quiet)
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
        try:
            buffer.close()
            mlclient.set_tag(run_id, "gantrack.failure", reason[:4000])
            mlclient.set_terminated(run_id, status)
        except Exception:  # the store itself is gone: the spool file (if any) holds the metrics
            pass
        raise
    finally:
        torch.set_num_threads(threads)


def _loop(
    cfg: Config,
    mlclient,
    run_id: str,
    buffer: tracking.MetricBuffer,
    gan: GAN,
    start: int,
    steps: int,
    history: dict[str, list[float]],
    quiet: bool,
) -> None:
    from tqdm import tqdm

    samples = _Samples(gan)
    per_sample = None
    if cfg.probes and cfg.per_sample_probes:
        per_sample = (
            PerSampleRecorder.from_state(gan.per_sample_state, steps)
            if gan.per_sample_state
            else PerSampleRecorder(steps - start + 1)
        )
    ckpt = checkpoint_path(cfg, run_id) if cfg.checkpoint_every else None
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
        keys: list[str] | None = None
        t_loop, cpu_loop = time.perf_counter(), time.process_time()
        for step in range(start, steps + 1):
            metrics = gan_step(gan)
            if per_sample is not None:
                per_sample.add(step, gan.cells)
            if keys is None:
                keys = list(metrics)
            values = torch.stack([metrics[k].float() for k in keys]).tolist()  # one sync, not one per key
            buffer.add(step, zip(keys, values))
            for k, v in zip(keys, values):
                history.setdefault(k, []).append(v)
            bad = [k for k, v in zip(keys, values) if k.startswith("loss/") and not math.isfinite(v)]
            if bad:
                tracking.best_effort(mlclient.set_tag, run_id, "gantrack.nonfinite_step", str(step))
                if not cfg.allow_nan:
                    buffer.flush()
                    raise TrainingDiverged(
                        f"non-finite {', '.join(bad)} at step {step} (rerun with --allow-nan to continue)"
                    )
            if ckpt is not None and step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt, gan, step, history, per_sample)
            if step % flush_every == 0:
                if ckpt is not None:
                    buffer.flush()  # the store must hold exactly the checkpoint's steps before training goes on
                else:
                    buffer.flush_in_background()
            if cfg.sample_every and step % cfg.sample_every == 0:
                tracking.best_effort(mlclient.log_artifact, run_id, str(samples.save(gan, step, tmpdir)), "samples")
            if not quiet and (step % 10 == 0 or step == steps):
                bar.set_postfix({k[5:]: f"{history[k][-1]:.3f}" for k in (C.D_REAL, C.D_FAKE, C.G_LOSS)}, refresh=False)
            bar.update(1)
        bar.close()
        spool = buffer.close(final_status="FINISHED")
        loop_s, loop_cpu_s = time.perf_counter() - t_loop, time.process_time() - cpu_loop
        # the loop's wall time (training, per-step logging, the last metrics write), for users and
        # the overhead benchmark
        tracking.best_effort(mlclient.set_tag, run_id, "gantrack.loop_seconds", f"{loop_s:.3f}")
        # CPU seconds of the whole process over the loop: all torch threads and the metrics writer,
        # so work moved off the loop thread still shows
        tracking.best_effort(mlclient.set_tag, run_id, "gantrack.loop_cpu_seconds", f"{loop_cpu_s:.3f}")
        if spool is None:
            _finish(cfg, mlclient, run_id, gan, samples, steps, history, tmpdir, per_sample)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)


def _finish(
    cfg,
    mlclient,
    run_id,
    gan: GAN,
    samples: _Samples,
    steps: int,
    history,
    tmpdir: Path,
    per_sample: PerSampleRecorder | None,
) -> None:
    """Final artifacts (curves, last samples, weights, per-sample probes) and the FINISHED status."""
    if per_sample is not None:
        folder, name = C.PER_SAMPLE_ARTIFACT.rsplit("/", 1)
        tracking.retry(mlclient.log_artifact, run_id, str(per_sample.save(tmpdir / name)), folder)
    if not cfg.sample_every or steps % cfg.sample_every:
        mlclient.log_artifact(run_id, str(samples.save(gan, steps, tmpdir)), "samples")
    fig = figures.book_plots(np.arange(1, steps + 1), {k: np.asarray(v) for k, v in history.items()})
    fig.savefig(tmpdir / "plot_line_plot_loss.png", dpi=100)
    figures.close(fig)
    tracking.retry(mlclient.log_artifact, run_id, str(tmpdir / "plot_line_plot_loss.png"), "plots")
    wdir = tmpdir / "weights"
    wdir.mkdir()
    torch.save(gan.D.state_dict(), wdir / "discriminator.pt")
    torch.save(gan.G.state_dict(), wdir / "generator.pt")
    tracking.retry(mlclient.log_artifacts, run_id, str(wdir), "weights")
    tracking.retry(mlclient.set_tag, run_id, "gantrack.status", "finished")
    tracking.retry(mlclient.set_terminated, run_id, "FINISHED", end_time=int(time.time() * 1000))
