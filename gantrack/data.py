"""Datasets: the bundled MNIST eights, the MNIST files users already have, and toys.

Images come back as float tensors in [-1, 1] with shape (N, 1, 28, 28), as chapter 10
scales them. Toy samplers draw from a ``torch.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import gzip
import math
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .contract import TOY_DATASETS
from .errors import GantrackError

BUNDLED_EIGHTS = "mnist_eights.npz"  # 5,851 training eights of MNIST (CC BY-SA 3.0)


def _scale(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
    return (x - 127.5) / 127.5


def bundled_eights() -> np.ndarray:
    """The MNIST training images of the digit 8, uint8 (5851, 28, 28), shipped in the package."""
    with resources.files("gantrack").joinpath("_bundled", BUNDLED_EIGHTS).open("rb") as f:
        return np.load(f)["x"]


def _read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or .gz): magic 0x0000 08 ndim, big-endian sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise GantrackError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise GantrackError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(dims):
        raise GantrackError(
            f"{path} is truncated or corrupt: header says {dims}, file has {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise GantrackError(f"{folder} has no {stem}[.gz] (expected the four MNIST IDX files)")


def load_mnist(path: str | Path, digit: int = 8, split: str = "train") -> np.ndarray:
    """MNIST images (uint8, N×28×28) of one digit (or all with ``digit=-1``).

    ``path`` is a Keras-style ``mnist.npz`` (keys x_train, y_train, x_test, y_test) or a
    folder holding the four IDX files (``train-images-idx3-ubyte`` etc., plain or ``.gz``).
    """
    p = Path(path)
    prefix = "train" if split == "train" else "t10k"
    if p.is_dir():
        x = _read_idx(_find_idx(p, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_find_idx(p, f"{prefix}-labels-idx1-ubyte"))
    elif p.is_file():
        try:
            with np.load(p, allow_pickle=False) as d:
                x, y = d[f"x_{split}"], d[f"y_{split}"]
        except KeyError as e:
            raise GantrackError(f"{p} lacks key {e} (expected a Keras-style mnist.npz)") from None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise GantrackError(f"{p} is not a readable .npz file: {e}") from None
    else:
        raise GantrackError(f"MNIST data not found: {p}")
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise GantrackError(f"{p}: expected images N×28×28 with N labels, got {x.shape} and {y.shape}")
    if digit >= 0:
        x = x[y == digit]
    if len(x) == 0:
        raise GantrackError(f"{p}: no images of digit {digit}")
    return x


def image_dataset(dataset: str, data_path: str = "", digit: int = 8) -> torch.Tensor:
    """The training images for a config, scaled to [-1, 1], shape (N, 1, 28, 28)."""
    if dataset == "mnist-eights":
        return _scale(bundled_eights())
    return _scale(load_mnist(data_path, digit))


# --- toys -----------------------------------------------------------------------------------


def quadratic_1d(n: int, gen: torch.Generator) -> torch.Tensor:
    """Chapter 6: x ~ U[-0.5, 0.5), paired with x² → (n, 2)."""
    x = torch.rand(n, 1, generator=gen) - 0.5
    return torch.cat([x, x * x], dim=1)


def ring_2d(n: int, gen: torch.Generator, modes: int = 8, radius: float = 2.0, std: float = 0.02) -> torch.Tensor:
    """A ring of ``modes`` Gaussians of std ``std`` on a circle of ``radius`` → (n, 2)."""
    k = torch.randint(0, modes, (n,), generator=gen).float()
    angle = 2 * math.pi * k / modes
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) * radius
    return centres + std * torch.randn(n, 2, generator=gen)


def dirac(n: int, gen: torch.Generator) -> torch.Tensor:
    """Dirac-GAN real data: the point 0 → (n, 1)."""
    return torch.zeros(n, 1)


TOYS = {"quadratic-1d": quadratic_1d, "ring-2d": ring_2d, "dirac": dirac}


def data_dim(dataset: str) -> int:
    return TOY_DATASETS[dataset]
