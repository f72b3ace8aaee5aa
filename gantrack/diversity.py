"""How varied G's samples are, against a reference set of real data, without a pretrained network.

The book identifies mode collapse by looking at the sample grids ("only a few types of figure-eights").
These are the numbers for what the eye sees there, each measured in raw data space (pixels in [-1, 1]
for images, coordinates for the 2-D toy) and each with its real-vs-real value, so a reader knows what
"no collapse" looks like at these sample sizes:

- ``div/ndb``, ``div/js``: **NDB/K and the Jensen-Shannon divergence** (Richardson & Weiss 2018, "On GANs
  and GMMs", arXiv 1805.12462). K-means bins are fitted on the reference set; each bin's share of the
  reference and of the samples are compared with a two-proportion z-test (pooled proportion), and NDB
  counts the bins whose difference is statistically different, as a fraction of K. JS is the
  divergence (natural log, in [0, ln 2]) between the two bin histograms. K = ``bins_for(n)``: one bin per
  100 reference samples, between 10 and 100 (the paper uses K = 100 on MNIST's 60,000; 5,851 eights
  give K = 58, about 17 samples a bin from a 1,000-sample snapshot). The z threshold is Bonferroni's
  for a two-sided 5 % test over the K bins (3.33 at K = 58), so identical distributions give NDB = 0
  in 95 % of snapshots; ``ndb(..., z_threshold=4)`` is the paper's README setting.
- ``div/coverage``, ``div/density``: **density and coverage** (Naeem et al. 2020, "Reliable Fidelity and
  Diversity Metrics for Generative Models", k = 5), vectorised here: the k-NN balls of ``BALL_SIZE``
  reference samples; coverage is the share of those balls that hold at least one sample, density the
  mean number of samples per ball over k. Identical distributions do not reach coverage 1 with finite
  sets, so ``div/coverage_ceiling`` is the coverage of held-out real samples of the snapshot's size.
- ``div/duplicates``: the share of samples whose nearest other sample is closer than the 1 % quantile of
  the same distance among held-out real samples of the snapshot's size (the birthday-paradox idea of
  Arora & Zhang 2017, calibrated instead of judged by eye): about 0.01 for real data by construction.
  The threshold is in the data's units: smooth (blurred) but varied samples have closer neighbours too
  (a 3×3 box blur of real eights gives 0.75), which is why the diagnosis reads duplicates together with
  coverage (0.99 for the blurred eights) and never alone.
- ``div/batch_bins``, every step: the effective number of bins (exp of the entropy of the bin shares)
  that G's training batch occupies — cheap (one distance matrix to the K centres), so it resolves G
  cycling through a few kinds of sample at the tutorial's 25-step period, which once-per-epoch snapshots
  cannot; ``Reference.batch_bins_null(n)`` is the value for real batches of the same size.
- ``div/modes`` and ``div/quality`` for ``ring-2d``: modes with at least 0.8 % of the samples within
  3 σ of their centre (PacGAN's "20 of 2,500"), and the share of samples within 3 σ of any mode (the
  Unrolled-GAN, VEEGAN and PacGAN measures).
- ``div/modes_kept`` for ``ring-2d``: modes whose cell (the points nearer to that mode than to any
  other) holds at least a quarter of its share of G's samples (1/32 of them). It counts modes G
  dropped whether or not its samples are sharp: a G spread around the ring between the modes (low
  quality) keeps all 8 cells near 1/8 each, a G that dropped modes leaves their cells at 0-1 %.

``reference_for(dataset)`` builds and caches a ``Reference`` (bins, balls, null values) per dataset on
disk, so the first training step never waits for K-means; ``Reference.fit(x)`` takes any tensor of real
samples (a user's data).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from scipy.cluster.vq import kmeans2

from . import paths
from .errors import GantrackError

SNAPSHOT_IMAGES = 1000  # G's samples per snapshot for images (the NDB paper's tests use 1,000-20,000)
SNAPSHOT_TOY = 2500  # and for the 2-D ring (PacGAN's sample size)
SNAPSHOT_CHUNK = 50  # G's snapshot pass in chunks of this many (see in_chunks)
BALL_SIZE = 1000  # reference samples whose k-NN balls coverage is counted over
K_NN = 5  # Naeem et al.'s k
DUPLICATE_QUANTILE = 0.01  # near-duplicate: closer than this quantile of real-vs-real nearest distances
MODE_SHARE = 0.008  # a ring mode is covered with >= 0.8 % of the samples within 3 sigma (20 of 2,500)
# a ring mode is kept when its cell holds >= a quarter of its share under the data (1/32 of the samples
# for 8 modes). The data's own smallest cell of 2,500 samples is about 0.11 (binomial sd 0.0066 around
# 0.125); a dropped mode's cell holds 0-1 % (the non-saturating rings of validation rounds 3-6 and the
# exploration seeds 101-103): a quarter sits about a factor 3 from both
KEPT_SHARE = 0.25
CACHE_VERSION = 1
# the ring-2d toy's modes (gantrack.data.ring_2d's defaults)
RING = {"modes": 8, "radius": 2.0, "std": 0.02}
KINDS = ("image", "points", "ring")


def bins_for(n: int) -> int:
    """K for a reference set of ``n`` samples: one bin per 100 samples, clipped to [10, 100]."""
    return int(min(100, max(10, n // 100)))


def bonferroni_z(k: int, alpha: float = 0.05) -> float:
    """The two-sided z threshold that keeps a test over ``k`` bins at family-wise level ``alpha``."""
    return float(stats.norm.isf(alpha / (2 * k)))


def _flat(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().float().cpu()
    return x.reshape(len(x), -1)


@dataclass
class Reference:
    """A reference set prepared for snapshots: K-means bins and their shares, k-NN balls, null values."""

    kind: str  # "image" (pixels in [-1, 1]), "points" (any low-dimensional data) or "ring" (ring-2d)
    dim: int
    centres: np.ndarray  # (K, dim) bin centres
    shares: np.ndarray  # (K,) reference share per bin
    n: int  # reference samples the shares were counted on
    z_threshold: float
    balls: np.ndarray  # (BALL_SIZE, dim) the real samples whose k-NN balls count coverage
    radii: np.ndarray  # (BALL_SIZE,) their k-th nearest-neighbour distance
    snapshot: int  # the snapshot size the null values are for
    coverage_ceiling: float  # coverage of held-out real samples of that size
    density_null: float
    duplicate_distance: float  # the near-duplicate threshold
    duplicates_null: float

    @classmethod
    def fit(
        cls, x, kind: str = "image", snapshot: int | None = None, seed: int = 0, centres: np.ndarray | None = None
    ) -> Reference:
        """Prepare real samples ``x`` (N × ...; images in [-1, 1]) for diversity snapshots of ``snapshot``.
        ``centres``: bin centres fitted before (the bundled eights' ship with the package)."""
        flat = _flat(x)
        if kind not in KINDS:
            raise GantrackError(f"unknown reference kind {kind!r} ({', '.join(KINDS)})")
        snapshot = snapshot or (SNAPSHOT_IMAGES if kind == "image" else SNAPSHOT_TOY)
        if not torch.isfinite(flat).all():
            raise GantrackError("reference data has NaN or infinite values")
        if kind == "image" and (flat.min() < -1.001 or flat.max() > 1.001):
            raise GantrackError(
                f"reference images have values in [{flat.min():.3g}, {flat.max():.3g}]; expected [-1, 1] "
                "as G's tanh output (scale uint8 pixels with (x - 127.5) / 127.5)"
            )
        n_ball = min(BALL_SIZE, len(flat) // 3)
        if len(flat) < 3 * K_NN + 30 or n_ball < 2 * K_NN:
            raise GantrackError(f"reference data has {len(flat)} samples; diversity needs at least 60")
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(flat), generator=g)
        balls = flat[order[:n_ball]]
        held_out = flat[order[n_ball : n_ball + snapshot]]  # real samples the null values are measured on
        if centres is None:
            centres = fit_bins(flat, seed)
        k = len(centres)
        centres = np.asarray(centres, dtype=np.float32)
        if centres.ndim != 2 or centres.shape[1] != flat.shape[1]:
            raise GantrackError(f"bin centres of shape {centres.shape} do not fit samples of {flat.shape[1]} values")
        labels = assign(flat, centres)
        shares = np.bincount(labels, minlength=k) / len(flat)
        radii = _kth_distance(balls, K_NN)
        coverage, density = _density_coverage(balls, radii, held_out)
        dup_d = _nearest_other(held_out)
        threshold = float(np.quantile(dup_d, DUPLICATE_QUANTILE))
        return cls(
            kind=kind,
            dim=flat.shape[1],
            centres=centres,
            shares=shares,
            n=len(flat),
            z_threshold=bonferroni_z(k),
            balls=balls.numpy(),
            radii=radii.numpy(),
            snapshot=len(held_out),
            coverage_ceiling=coverage,
            density_null=density,
            duplicate_distance=threshold,
            duplicates_null=float((dup_d < threshold).mean()),
        )

    def batch_bins_null(self, n: int) -> float:
        """Mean effective bins of random real batches of ``n`` (the balls and held-out samples: 20 draws)."""
        cache = self.__dict__.setdefault("_batch_null", {})
        if n not in cache:
            g = torch.Generator().manual_seed(n)
            pool = torch.from_numpy(self.balls)
            draws = [effective_bins(pool[torch.randperm(len(pool), generator=g)[:n]], self.centres) for _ in range(20)]
            cache[n] = float(np.mean(draws))
        return cache[n]

    def check(self, samples) -> torch.Tensor:
        """``samples`` flattened, or one clear error when they cannot be compared with this reference."""
        flat = _flat(samples)
        if flat.shape[1] != self.dim:
            raise GantrackError(f"samples have {flat.shape[1]} values each; the reference has {self.dim}")
        return flat

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Reference:
        with np.load(path, allow_pickle=False) as d:
            values = {f.name: d[f.name] for f in fields(cls)}
        values["kind"] = str(values["kind"])
        for name in ("dim", "n", "snapshot"):
            values[name] = int(values[name])
        for name in ("z_threshold", "coverage_ceiling", "density_null", "duplicate_distance", "duplicates_null"):
            values[name] = float(values[name])
        return cls(**values)


def in_chunks(G, z: torch.Tensor) -> torch.Tensor:
    """``G(z)`` for a snapshot's latents, ``SNAPSHOT_CHUNK`` at a time, in inference mode — only for a G
    whose output does not depend on its batch (no BatchNorm in batch-statistics mode). Chunks of 50 keep
    a chunk's activations in the CPU's caches: for the DCGAN G at widths 0.25-1 on two threads, 20 of
    50 take half the time of 4 of 250 (docs/diagnosis.md, "Cost")."""
    with torch.inference_mode():  # lets models.OneChannelConv2d take its inference-only sum
        parts = [G(part) for part in z.split(SNAPSHOT_CHUNK)]
    return torch.cat(parts)  # outside inference mode: an ordinary tensor, usable anywhere afterwards


def fit_bins(flat: torch.Tensor, seed: int = 0) -> np.ndarray:
    """K-means bin centres (``bins_for(N)`` of them): scipy's ``kmeans2``, k-means++ start, 20 iterations."""
    centres, _ = kmeans2(flat.numpy().astype(np.float64), bins_for(len(flat)), minit="++", seed=seed, iter=20)
    return centres.astype(np.float32)


def assign(flat: torch.Tensor, centres: np.ndarray) -> np.ndarray:
    """Each sample's nearest bin centre."""
    return torch.cdist(flat, torch.from_numpy(centres)).argmin(dim=1).numpy()


def _kth_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 0 to itself is the first


def _nearest_other(x: torch.Tensor) -> np.ndarray:
    """Each sample's distance to its nearest other sample."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.numpy()


def _density_coverage(balls: torch.Tensor, radii: torch.Tensor, samples: torch.Tensor) -> tuple[float, float]:
    inside = torch.cdist(balls, samples) < radii[:, None]  # (balls, samples)
    coverage = inside.any(dim=1).float().mean().item()
    density = inside.sum().item() / (K_NN * len(samples))
    return coverage, density


def ndb(samples, ref: Reference, z_threshold: float | None = None) -> dict[str, np.ndarray | float]:
    """NDB/K, JS and the per-bin z statistics of ``samples`` against ``ref``'s bins.

    Two-proportion z-test per bin with the pooled proportion (Richardson & Weiss 2018, §4):
    z = (p_s − p_r) / sqrt(p̂ (1 − p̂) (1/n_s + 1/n_r)), p̂ the pooled share.
    """
    flat = ref.check(samples)
    k = len(ref.centres)
    counts = np.bincount(assign(flat, ref.centres), minlength=k)
    p_s, p_r, n_s, n_r = counts / len(flat), ref.shares, len(flat), ref.n
    pooled = (counts + p_r * n_r) / (n_s + n_r)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_s + 1 / n_r))
    z = np.divide(p_s - p_r, se, out=np.zeros(k), where=se > 0)
    threshold = ref.z_threshold if z_threshold is None else z_threshold
    return {"ndb": float((np.abs(z) > threshold).mean()), "js": js_divergence(p_s, p_r), "z": z, "shares": p_s}


def effective_bins(samples, centres: np.ndarray) -> float:
    """exp(entropy) of the samples' bin shares: K when they spread evenly, 1 when all share one bin."""
    counts = np.bincount(assign(_flat(samples), centres), minlength=len(centres))
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence of two histograms (natural log: 0 for equal, ln 2 at most)."""
    m = 0.5 * (p + q)

    def kl(a):
        keep = a > 0  # where a > 0, m > 0 too
        return float(np.sum(a[keep] * np.log(a[keep] / m[keep])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def ring_modes(samples, modes: int = RING["modes"], radius: float = RING["radius"], std: float = RING["std"]):
    """(modes covered, share of high-quality samples) for the ring of Gaussians."""
    x = _flat(samples)
    near = _nearest_mode(x, modes, radius)
    good = near.values < 3 * std
    per_mode = torch.bincount(near.indices[good], minlength=modes)
    return int((per_mode >= MODE_SHARE * len(x)).sum()), float(good.float().mean())


def ring_modes_kept(samples, modes: int = RING["modes"], radius: float = RING["radius"]) -> int:
    """Modes of the ring whose cell (the samples nearest to that mode's centre, however far) holds at
    least ``KEPT_SHARE`` of the 1/``modes`` share the data gives it."""
    x = _flat(samples)
    per_cell = torch.bincount(_nearest_mode(x, modes, radius).indices, minlength=modes)
    return int((per_cell >= KEPT_SHARE * len(x) / modes).sum())


def _nearest_mode(x: torch.Tensor, modes: int, radius: float):
    """Each point's distance to the nearest of the ring's mode centres, and which one (``values``, ``indices``)."""
    angle = 2 * math.pi * torch.arange(modes) / modes
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) * radius
    return torch.cdist(x, centres).min(dim=1)


def snapshot_metrics(samples, ref: Reference) -> dict[str, float]:
    """The ``div/*`` metrics of one snapshot of G's samples (keys in ``gantrack.contract``)."""
    from . import contract as C

    flat = ref.check(samples)
    if not torch.isfinite(flat).all():
        return {}  # a diverged G: the loss-side rules say so; no diversity number is honest here
    out = ndb(flat, ref)
    coverage, density = _density_coverage(torch.from_numpy(ref.balls), torch.from_numpy(ref.radii), flat)
    m = {
        C.DIV_NDB: out["ndb"],
        C.DIV_JS: out["js"],
        C.DIV_COVERAGE: coverage,
        C.DIV_COVERAGE_CEILING: ref.coverage_ceiling,
        C.DIV_DENSITY: density,
        C.DIV_DUPLICATES: float((_nearest_other(flat) < ref.duplicate_distance).mean()),
    }
    if ref.kind == "ring":
        m[C.DIV_MODES], m[C.DIV_QUALITY] = ring_modes(flat)
        m[C.DIV_MODES_KEPT] = ring_modes_kept(flat)
    return m


# --- the reference of a dataset, cached -----------------------------------------------------------


def cache_dir() -> Path:
    return paths.cache_dir("reference")


_MEMORY: dict[str, Reference] = {}


BUNDLED_BINS = "mnist_eights_bins.npz"  # K-means centres of the bundled eights (gantrack/_bundled/README.md)


def bundled_bins() -> np.ndarray:
    from importlib import resources

    with resources.files("gantrack").joinpath("_bundled", BUNDLED_BINS).open("rb") as f:
        return np.load(f)["centres"].astype(np.float32)


def reference_for_data(x, kind: str = "image", snapshot: int | None = None, centres=None) -> Reference:
    """``Reference.fit(x)``, cached in memory and on disk by a hash of the data (fitting K-means on 5,851
    eights takes seconds; a cached reference loads in milliseconds)."""
    flat = _flat(x).contiguous()
    key = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:20] + f"-{kind}-{snapshot or 0}-v{CACHE_VERSION}"
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / f"{key}.npz"
    ref = None
    if path.is_file():
        try:
            ref = Reference.load(path)
        except (OSError, ValueError, KeyError):
            ref = None  # a damaged cache entry is rebuilt
    if ref is None:
        ref = Reference.fit(flat, kind=kind, snapshot=snapshot, centres=centres)
        try:
            ref.save(path)
        except OSError:
            pass  # a read-only home: the reference is rebuilt next time, nothing else changes
    _MEMORY[key] = ref
    return ref


def user_reference(data) -> Reference:
    """A user's reference set — a tensor (N × ...) or a loader of batches (tensors or (x, y) pairs, at most
    10,000 samples taken) — prepared and cached; images (N × C × H × W) must be in [-1, 1]."""
    if not isinstance(data, torch.Tensor):
        chunks, n = [], 0
        try:
            for batch in data:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if not isinstance(x, torch.Tensor):
                    raise GantrackError(f"reference loader yields {type(x).__name__}, not tensors")
                chunks.append(x.detach().cpu())
                n += len(x)
                if n >= 10_000:
                    break
        except TypeError:
            raise GantrackError(f"reference: a tensor or a loader of tensors, not {type(data).__name__}") from None
        if not chunks:
            raise GantrackError("reference loader is empty")
        data = torch.cat(chunks)[:10_000]
    return reference_for_data(data, "image" if data.ndim >= 3 else "points")


def reference_for(dataset: str, real: torch.Tensor | None = None) -> Reference | None:
    """The reference of one of gantrack's datasets (``real``: its images when it is an image dataset);
    None where no diversity measure applies (the 1-D toys)."""
    if real is not None:
        # the bundled eights' bins ship with the package: no K-means at run time
        return reference_for_data(real, "image", centres=bundled_bins() if dataset == "mnist-eights" else None)
    if dataset == "ring-2d":
        from .data import ring_2d

        return reference_for_data(ring_2d(10_000, torch.Generator().manual_seed(0)), "ring")
    return None
