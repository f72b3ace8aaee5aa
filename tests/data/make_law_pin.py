"""The pinned quick run of ``tests/test_pins.py``: its curves and per-sample probes, and what the
analysis measured on them when they were made.

    python tests/data/make_law_pin.py        # rewrites tests/data/law_pin.npz and law_pin.json

The run: ``Config(width=0.0625, batch_size=32, seed=7, sample_every=0)`` (the stable preset's DCGAN at
a sixteenth of its width, bundled MNIST eights), 400 steps of ``gan_step`` in memory. Its numbers are
stored as inputs (``law_pin.npz``: every logged key per step and every cell's per-sample scores), so the
test reruns only the analysis — numpy and scipy, the same on every CPU — and compares it tightly with
``law_pin.json``. Training itself is bit-reproducible on one machine (``test_pins`` checks that too) but
not across CPUs (AVX2 vs AVX-512 kernels round differently), so the curves are data here, not code.
"""

import json
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CONFIG = dict(width=0.0625, batch_size=32, seed=7, sample_every=0)
STEPS = 400
OPTIONS = dict(n_boot=300)


def train():
    import torch

    from gantrack import Config
    from gantrack.harness import build_gan, gan_step
    from gantrack.probes import PerSampleRecorder

    torch.set_num_threads(1)
    gan = build_gan(Config(**CONFIG))
    rec = PerSampleRecorder(STEPS)
    rows = []
    for step in range(1, STEPS + 1):
        rows.append(gan_step(gan))
        rec.add(step, gan.cells)
    keys = sorted(rows[0])
    arrays = {"keys": np.array(keys), "values": np.array([[r[k] for k in keys] for r in rows])}
    arrays.update({f"cell:{k}": v[: rec.n] for k, v in rec.cells.items()})
    arrays["steps"] = rec.steps[: rec.n]
    return arrays


def frame_and_probes(arrays):
    """The stored run as explain's inputs: the long metrics frame and the per-sample arrays."""
    import pandas as pd

    keys, values = [str(k) for k in arrays["keys"]], arrays["values"]
    n = len(values)
    frame = pd.DataFrame(
        {
            "run_id": "pin",
            "key": np.repeat(keys, n),
            "step": np.tile(np.arange(1, n + 1), len(keys)),
            "timestamp": 0,
            "value": values.T.reshape(-1),
        }
    )
    ps = {"steps": arrays["steps"]}
    ps.update({k[5:]: arrays[k] for k in arrays if k.startswith("cell:")})
    return frame, ps


PINNED = ["ratio", "link", "link_lo", "link_hi", "predicted_link", "link_error", "link_error_lo", "link_error_hi"]
PINNED += ["predicted_ratio", "ratio_error", "predicted_link_simple", "context", "timing", "sampling"]


def analyse(arrays):
    from gantrack.analysis import explain

    frame, ps = frame_and_probes(arrays)
    s = explain(frame, per_sample=ps, **OPTIONS)["summary"].iloc[0]
    return {k: float(s[k]) for k in PINNED} | {"law_verdict": s["law_verdict"]}


if __name__ == "__main__":
    import pandas
    import scipy
    import torch

    arrays = train()
    np.savez_compressed(HERE / "law_pin.npz", **arrays)
    arrays = dict(np.load(HERE / "law_pin.npz"))
    record = {
        "command": "python tests/data/make_law_pin.py",
        "config": CONFIG,
        "steps": STEPS,
        "options": OPTIONS,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pandas.__version__,
        },
        "machine": platform.processor() or platform.machine(),
        "measured": analyse(arrays),
    }
    (HERE / "law_pin.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["measured"], indent=1))
