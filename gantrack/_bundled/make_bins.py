"""Rebuild mnist_eights_bins.npz: the K-means bin centres of the bundled eights for gantrack.diversity.

    python gantrack/_bundled/make_bins.py

Deterministic (scipy kmeans2, k-means++ start, seed 0, 20 iterations, K = bins_for(5851) = 58), so the
file can be checked: tests/test_diagnosis.py refits and compares the bins' shares.
"""

from pathlib import Path

import numpy as np

from gantrack.data import image_dataset
from gantrack.diversity import _flat, fit_bins

if __name__ == "__main__":
    centres = fit_bins(_flat(image_dataset("mnist-eights")), seed=0)
    np.savez_compressed(Path(__file__).with_name("mnist_eights_bins.npz"), centres=centres.astype(np.float16))
    print(centres.shape)
