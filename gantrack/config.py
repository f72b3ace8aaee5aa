"""Training configuration: one plain dataclass, named presets, and overrides.

A preset is just a ``Config``; every field can be overridden from a TOML file or
``--set key=value``. ``validate`` turns nonsense into one readable ``GantrackError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .contract import DATASETS, IMAGE_DATASETS, LOSS_FAMILIES
from .errors import GantrackError

MODELS = ("dcgan", "mlp", "dirac")
LOSSES = LOSS_FAMILIES
SCHEDULES = ("book", "joint")
OPTIMIZERS = ("adam", "sgd")
ARCHS = ("bn", "nobn")
D_BN_MODES = ("batch", "moving")


# Fields that say where and how a run is carried out, not what is trained: they do not count toward a
# run's identity (its config hash) and a sweep's preset axis keeps the base config's values for them.
# ``device`` and ``fast_path`` change rounding, not the model (gantrack.device: what "same seed" means).
RUN_SETTINGS = (
    "experiment",
    "flush_every",
    "threads",
    "checkpoint_every",
    "checkpoint_dir",
    "device",
    "fast_path",
    "diversity_every",
)
# Fields added after runs were first stored: left out of the hash at their defaults, so those runs keep
# their identity (a sweep or study reuses them) while a non-default value makes a new run.
HASH_IF_NOT_DEFAULT = {"precision": "fp32", "stop_on": "", "mlp_layers": 1}


@dataclass
class Config:
    """Everything a run needs. Defaults are chapter 10's stable DCGAN (book's 2019 listing)."""

    scenario: str = "stable"
    experiment: str = "gantrack"
    seed: int = 1
    # data
    dataset: str = "mnist-eights"  # bundled MNIST eights; "mnist" reads data_path
    data_path: str = ""  # Keras-style mnist.npz, or a folder with the four IDX files
    digit: int = 8  # with dataset="mnist": the digit to keep, -1 for all
    # models
    model: str = "dcgan"
    arch: str = "bn"  # "bn": 2019 book listing with BatchNorm; "nobn": Jan-2021 tutorial
    width: float = 1.0  # channel multiplier (D 64, G 128 at 1.0); 0.25 for quick runs
    d_width: float = 0.0  # D's own multiplier (0: same as width); quick studies keep D wider than G
    latent_dim: int = 50
    mlp_hidden_d: int = 25
    mlp_hidden_g: int = 15
    mlp_layers: int = 1  # hidden layers of each MLP player (chapter 6: one)
    bn_momentum: float = 0.99  # Keras convention (PyTorch momentum = 1 - this)
    bn_eps: float = 1e-3
    d_bn_in_g_step: str = "batch"  # "batch": Keras 2.2.4 (book); "moving": tf.keras >= 2
    # Keras 2.2.4 (TF backend) zero-debiases BatchNorm's moving averages, so G.predict sees batch-like
    # statistics from the first step; PyTorch and tf.keras >= 2 start from mean 0, var 1 instead
    bn_zero_debias: bool = True
    dirac_theta0: float = 1.0
    dirac_psi0: float = 0.0
    # loss and schedule
    loss: str = "nsgan"
    schedule: str = "book"  # "book": D real, D fake, G; "joint": one D step on real+fake
    n_critic: int = 1
    gp_weight: float = 10.0
    clip_eps: float = 1e-7  # Keras clips predictions to [eps, 1 - eps] in BCE
    # optimisation
    optimizer: str = "adam"
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    adam_eps: float = 1e-7  # Keras's epsilon (PyTorch's default is 1e-8)
    batch_size: int = 128  # G's batch; D sees half real + half fake
    epochs: int = 10
    batches_per_epoch: int = 0  # 0: len(dataset) // batch_size (45 for the eights)
    steps: int = 0  # 0: epochs * batches_per_epoch
    # logging
    probes: bool = True
    per_sample_probes: bool = True  # with probes: every cell's per-sample D scores as a run artifact
    grad_norms: bool = True
    flush_every: int = 100  # metrics are sent to MLflow in batches of this many steps
    sample_every: int = 100  # sample grid every N steps (0: only at the end)
    allow_nan: bool = False
    # a snapshot of G's samples against the data (gantrack.diversity: div/*) every N steps; 0: once per
    # epoch, as the book's summarize_performance; -1: never
    diversity_every: int = 0
    # failure modes (gantrack.diagnosis) that end the run early and cleanly, comma-separated, e.g.
    # "convergence-failure,diverged"; the tag gantrack.stopped says which and at which step
    stop_on: str = ""
    checkpoint_every: int = 0  # steps between checkpoints (0: none); metrics are then flushed at checkpoints
    checkpoint_dir: str = ""  # default $GANTRACK_CHECKPOINT_DIR or ~/.cache/gantrack/checkpoints
    threads: int = 0  # torch threads; 0: the cores free for this run (gantrack.cores)
    # where and how fast (gantrack.device)
    device: str = "auto"  # auto: CUDA, then Apple MPS, then CPU; or cpu, cuda, cuda:N, mps
    precision: str = "fp32"  # "bf16": bfloat16 autocast for the models' forward passes (losses stay fp32)
    # the DCGAN's fast kernels: channels-last (NHWC) activations and G's one-channel output convolution as
    # a GEMM (models.OneChannelConv2d): the same math to float rounding, ~1.7x faster on 2 CPU cores;
    # false: plain NCHW convolutions, the reference the benchmark compares against
    fast_path: bool = True

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Hash of the resolved config (minus presentation-only fields): identifies a run in a sweep."""
        d = self.to_dict()
        for k in RUN_SETTINGS:
            d.pop(k)
        for k, default in HASH_IF_NOT_DEFAULT.items():
            if d[k] == default:
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def half_batch(self) -> int:
        return self.batch_size // 2


PRESETS: dict[str, tuple[str, Config]] = {
    "stable": ("Chapter 10 stable DCGAN on MNIST eights (book's 2019 listing, BatchNorm).", Config()),
    "mode-collapse": (
        "Chapter 10 mode collapse: the latent space shrunk to one dimension.",
        Config(scenario="mode-collapse", latent_dim=1),
    ),
    "convergence-failure": (
        "Chapter 10 convergence failure: D updated on one combined real+fake batch.",
        Config(scenario="convergence-failure", schedule="joint"),
    ),
    "convergence-failure-adam": (
        "Chapter 10 convergence failure: Adam's defaults (lr 1e-3, beta1 0.9) for both models.",
        Config(scenario="convergence-failure-adam", lr=1e-3, beta1=0.9),
    ),
    "dirac": (
        "Dirac-GAN (Mescheder et al. 2018): G(z)=theta, D(x)=sigmoid(psi x), alternating SGD.",
        Config(
            scenario="dirac",
            dataset="dirac",
            model="dirac",
            optimizer="sgd",
            lr=0.1,
            batch_size=2,
            steps=2000,
            latent_dim=1,
            sample_every=0,
        ),
    ),
    "quadratic-1d": (
        "Chapter 6 1-D GAN: x ~ U[-0.5, 0.5) paired with x^2, small MLPs, Adam defaults.",
        Config(
            scenario="quadratic-1d",
            dataset="quadratic-1d",
            model="mlp",
            latent_dim=5,
            lr=1e-3,
            beta1=0.9,
            steps=10000,
            sample_every=1000,
        ),
    ),
    "ring-2d": (
        "2-D ring of 8 Gaussians, MLP players: the classic mode-hopping toy.",
        Config(
            scenario="ring-2d",
            dataset="ring-2d",
            model="mlp",
            latent_dim=2,
            mlp_hidden_d=128,
            mlp_hidden_g=128,
            # three hidden layers: with chapter 6's one, G has not reached the modes after 5,000 steps
            # (quality 0.01); with three, the non-saturating GAN settles on 2-3 of the 8 modes
            mlp_layers=3,
            lr=1e-3,
            beta1=0.5,
            steps=5000,
            sample_every=1000,
        ),
    ),
}


def preset(name: str) -> Config:
    """The named preset's config (a fresh copy)."""
    if name not in PRESETS:
        raise GantrackError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name][1])


_FIELDS = {f.name: f for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML or command-line value to the field's type, or explain why not."""
    kind = type(getattr(Config(), name))
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes", "on")
            return kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except ValueError:
            raise GantrackError(f"{name}: expected {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise GantrackError(f"{name}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with the given fields changed (values may be strings)."""
    changes = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in _FIELDS:
            raise GantrackError(f"unknown config key {key!r}")
        changes[key] = _coerce(key, value)
    return dataclasses.replace(config, **changes)


def parse_set(items: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "loss=hinge"]`` → ``{"lr": "1e-3", "loss": "hinge"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GantrackError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def load_toml(path: str | Path, tables: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a config file: top-level keys are Config fields (``preset = "..."`` allowed);
    ``tables`` names the tables allowed (a sweep file's ``[grid]``)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise GantrackError(f"config file not found: {p}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GantrackError(f"config file {p} is not valid TOML: {e}") from None
    except OSError as e:
        raise GantrackError(f"cannot read config file {p}: {e.strerror}") from None
    for key, value in data.items():
        if isinstance(value, dict) and key not in tables:
            raise GantrackError(f"config file {p}: tables are not supported ([{key}])")
    return data


def resolve(
    preset_name: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    file_values: dict[str, Any] | None = None,
) -> Config:
    """Preset, then file, then overrides; validated."""
    file_values = dict(file_values) if file_values is not None else (load_toml(config_file) if config_file else {})
    name = file_values.pop("preset", None) or preset_name or "stable"
    if not isinstance(name, str):
        raise GantrackError(f"preset: expected a string, got {name!r}")
    cfg = apply_overrides(preset(name), file_values)
    cfg = apply_overrides(cfg, overrides or {})
    return validate(cfg)


def validate(cfg: Config) -> Config:
    """Check types, choices and sizes; return ``cfg`` unchanged or raise ``GantrackError``."""
    defaults = Config()
    for name in _FIELDS:
        value, kind = getattr(cfg, name), type(getattr(defaults, name))
        # an int where a float is expected is fine; a bool is not an int here, and a string is never a number
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok and not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
            raise GantrackError(
                f"{name}: expected {kind.__name__}, got {value!r} (use config.apply_overrides for strings)"
            )
    for name, choices in (
        ("dataset", DATASETS),
        ("model", MODELS),
        ("loss", LOSSES),
        ("schedule", SCHEDULES),
        ("optimizer", OPTIMIZERS),
        ("arch", ARCHS),
        ("d_bn_in_g_step", D_BN_MODES),
    ):
        if getattr(cfg, name) not in choices:
            raise GantrackError(f"unknown {name} {getattr(cfg, name)!r}; choose one of: {', '.join(choices)}")
    positive = (
        "latent_dim",
        "batch_size",
        "epochs",
        "n_critic",
        "mlp_hidden_d",
        "mlp_hidden_g",
        "mlp_layers",
        "flush_every",
    )
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise GantrackError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("lr", "width", "bn_eps", "clip_eps"):
        v = getattr(cfg, name)
        if not (v > 0) or v != v or v == float("inf"):
            raise GantrackError(f"{name} must be a positive number, got {v}")
    for name in ("steps", "batches_per_epoch", "sample_every", "threads", "checkpoint_every"):
        if getattr(cfg, name) < 0:
            raise GantrackError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.diversity_every < -1:
        raise GantrackError(
            f"diversity_every must be -1 (never), 0 (once per epoch) or positive, got {cfg.diversity_every}"
        )
    from .stepstats import parse_stop_on

    parse_stop_on(cfg.stop_on)
    if cfg.batch_size < 2:
        raise GantrackError(f"batch_size must be at least 2 (D sees half real, half fake), got {cfg.batch_size}")
    if cfg.width * 16 < 1:
        raise GantrackError(f"width {cfg.width} leaves no channels; use at least 0.0625")
    for name in ("beta1", "beta2", "bn_momentum"):
        if not 0 <= getattr(cfg, name) < 1:
            raise GantrackError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.gp_weight < 0:
        raise GantrackError(f"gp_weight must be >= 0, got {cfg.gp_weight}")
    limits = {
        "batch_size": 1 << 16,
        "latent_dim": 1 << 14,
        "steps": 10**8,
        "epochs": 10**6,
        "mlp_hidden_d": 1 << 14,
        "mlp_hidden_g": 1 << 14,
        "mlp_layers": 64,
        "n_critic": 1000,
    }
    for name, hi in limits.items():
        if getattr(cfg, name) > hi:
            raise GantrackError(f"{name} = {getattr(cfg, name)} is absurdly large (limit {hi})")
    if cfg.d_width < 0 or (cfg.d_width and cfg.d_width * 16 < 1) or cfg.d_width > 16:
        raise GantrackError(f"d_width must be 0 (same as width) or in [0.0625, 16], got {cfg.d_width}")
    if cfg.width > 16:
        raise GantrackError(f"width = {cfg.width} is absurdly large (limit 16)")
    from .device import check_precision, resolve_device  # imports torch: only when a config is checked

    check_precision(cfg.precision, resolve_device(cfg.device))
    if cfg.dataset == "mnist" and not cfg.data_path:
        raise GantrackError("dataset 'mnist' needs data_path (a mnist.npz or a folder of IDX files)")
    if not -1 <= cfg.digit <= 9:
        raise GantrackError(f"digit must be 0-9 or -1 for all, got {cfg.digit}")
    image = cfg.dataset in IMAGE_DATASETS
    if image != (cfg.model == "dcgan"):
        raise GantrackError(
            f"model {cfg.model!r} does not fit dataset {cfg.dataset!r} "
            "(dcgan is for MNIST; mlp for the 1-D/2-D toys; dirac for dirac)"
        )
    if (cfg.dataset == "dirac") != (cfg.model == "dirac"):
        raise GantrackError("the dirac dataset and the dirac model go together")
    return cfg
