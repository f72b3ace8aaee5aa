import gzip

import numpy as np
import pytest
import torch

from gantrack.data import bundled_eights, image_dataset, load_mnist, quadratic_1d, ring_2d
from gantrack.errors import GantrackError


def test_bundled_eights_are_the_5851_training_eights():
    x = bundled_eights()
    assert x.shape == (5851, 28, 28) and x.dtype == np.uint8
    t = image_dataset("mnist-eights")
    assert t.shape == (5851, 1, 28, 28) and t.min() >= -1 and t.max() <= 1


def _fake_mnist(rng):
    x = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    y = np.arange(30, dtype=np.uint8) % 10
    return x, y


def _write_idx(path, arr, gz=False):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_plain_and_gz(tmp_path, gz):
    x, y = _fake_mnist(np.random.default_rng(0))
    _write_idx(tmp_path / "train-images-idx3-ubyte", x, gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y, gz)
    sevens = load_mnist(tmp_path, digit=7)
    assert np.array_equal(sevens, x[y == 7])
    assert len(load_mnist(tmp_path, digit=-1)) == 30


def test_keras_npz(tmp_path):
    x, y = _fake_mnist(np.random.default_rng(1))
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert np.array_equal(load_mnist(tmp_path / "mnist.npz", digit=3), x[y == 3])


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(GantrackError, match="not found"):
        load_mnist(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(GantrackError, match="not a readable"):
        load_mnist(tmp_path / "bad.npz")
    x, y = _fake_mnist(np.random.default_rng(2))
    _write_idx(tmp_path / "train-images-idx3-ubyte", x)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 30]) + b"\x01" * 5)
    with pytest.raises(GantrackError, match="truncated or corrupt"):
        load_mnist(tmp_path)
    np.savez(tmp_path / "wrong.npz", images=x)
    with pytest.raises(GantrackError, match="lacks key"):
        load_mnist(tmp_path / "wrong.npz")


def test_toys():
    g = torch.Generator().manual_seed(0)
    q = quadratic_1d(1000, g)
    assert q.shape == (1000, 2) and torch.allclose(q[:, 1], q[:, 0] ** 2)
    assert q[:, 0].min() >= -0.5 and q[:, 0].max() < 0.5
    r = ring_2d(2000, g)
    radius = r.norm(dim=1)
    assert abs(radius.mean().item() - 2.0) < 0.01
    angles = torch.round(torch.atan2(r[:, 1], r[:, 0]) / (2 * np.pi / 8)) % 8
    assert len(torch.unique(angles)) == 8
