"""The NDB anchor on full MNIST: gantrack.diversity's NDB against the setting of Richardson & Weiss's README.

K = 100 K-means bins on a random 50,000 of the 60,000 training digits, a z threshold of 4: the other
10,000 (a random split: the same distribution) should give NDB = 0, and those without the nines about 11
bins (the nines' bins are under-filled, the others over-filled). MNIST's own test set (other writers)
is printed too. Also prints gantrack's own setting (Bonferroni z
at K = 100) and the real-vs-real value on the eights (bins of 4,851 training eights, the other 1,000).

    python analysis/ndb_anchor.py --mnist ../shared/data/mnist.npz
"""

import argparse
import time

import numpy as np
import torch

from gantrack import diversity as V
from gantrack.data import _scale, load_mnist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default="../shared/data/mnist.npz")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with np.load(args.mnist) as d:
        x_all, y_all = _scale(d["x_train"]), d["y_train"]
        test_x, test_y = _scale(d["x_test"]), d["y_test"]
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x_all), generator=g)
    train, held, held_y = x_all[order[:50_000]], x_all[order[50_000:]], y_all[order[50_000:].numpy()]
    from scipy.cluster.vq import kmeans2

    bins, _ = kmeans2(V._flat(train).numpy().astype(np.float64), 100, minit="++", seed=0, iter=20)
    ref = V.Reference.fit(train, centres=bins.astype(np.float32))
    print(f"bins fitted on {len(train)} training digits, K = {len(bins)} ({time.perf_counter() - t0:.0f} s)")
    for name, x in (
        ("the other 10,000 training digits", held),
        ("those without the nines", held[torch.from_numpy(held_y != 9)]),
        ("MNIST's test set", test_x),
        ("the test set without the nines", test_x[torch.from_numpy(test_y != 9)]),
    ):
        for z in (4.0, ref.z_threshold):
            out = V.ndb(x, ref, z_threshold=z)
            print(f"{name}: NDB = {round(out['ndb'] * 100)} of 100 bins at z > {z:.2f}, JS {out['js']:.4f}")
    eights = _scale(load_mnist(args.mnist, digit=8))
    order = torch.randperm(len(eights), generator=g)
    fit, held = eights[order[:4851]], eights[order[4851:]]
    r8 = V.Reference.fit(fit, centres=V.fit_bins(V._flat(fit)))
    m = V.snapshot_metrics(held, r8)
    print(
        f"eights, real vs real (K = {len(r8.centres)}, z > {r8.z_threshold:.2f}): NDB/K {m['div/ndb']:.3f}, "
        f"JS {m['div/js']:.4f}, coverage {m['div/coverage']:.3f} (ceiling {m['div/coverage_ceiling']:.3f}), "
        f"duplicates {m['div/duplicates']:.3f}"
    )


if __name__ == "__main__":
    main()
