"""Values pinned against numbers made once, with the script and versions that made them
(tests/data/make_*.py; ArviZ's reference tests against R's ``posterior`` are the model)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gantrack import Config
from gantrack.analysis.measures import acf, iat_geyer
from gantrack.harness import build_gan, gan_step

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_iat_reference  # noqa: E402
import make_law_pin  # noqa: E402


def test_the_law_on_the_pinned_run_gives_the_recorded_numbers():
    """A change that moved the measured link, the law's prediction or its error by more than rounding
    fails here (the membership checks it replaces could not fail)."""
    record = json.loads((DATA / "law_pin.json").read_text())
    arrays = dict(np.load(DATA / "law_pin.npz"))
    got = make_law_pin.analyse(arrays)
    for name, want in record["measured"].items():
        if name == "law_verdict":
            assert got[name] == want
        else:
            assert got[name] == pytest.approx(want, rel=1e-7, abs=1e-12), name
    # and what the recorded numbers say, as a reader would check them
    m = record["measured"]
    assert m["link_error"] == pytest.approx(m["predicted_link"] / m["link"] - 1, rel=1e-9)
    assert m["law_verdict"] == "holds" and -0.15 <= m["link_error_lo"] and m["link_error_hi"] <= 0.15


def test_the_harness_is_bit_reproducible_for_a_seed():
    def run():
        torch.set_num_threads(1)
        gan = build_gan(Config(width=0.0625, batch_size=16, seed=3, sample_every=0))
        return [gan_step(gan) for _ in range(5)]

    threads = torch.get_num_threads()
    try:
        a, b = run(), run()
    finally:
        torch.set_num_threads(threads)
    assert [sorted(s) for s in a] == [sorted(s) for s in b]
    assert a == b  # float for float


def test_iat_geyer_matches_arviz_ess_on_the_unsplit_chain():
    ref = json.loads((DATA / "iat_reference.json").read_text())
    for name, x in make_iat_reference.series():
        tau = float(iat_geyer(acf(x, len(x) - 1))[0])
        # the same estimator; ArviZ subtracts 1/(n-1) from each autocorrelation and adds back one lag
        assert tau == pytest.approx(ref["tau_unsplit"][name], rel=0.01), name
    # ArviZ's public ess() splits the chain: on the slowest AR(1) that is a different number, recorded
    slow = [k for k in ref["tau_split"] if "phi=0.9" in k]
    assert max(ref["tau_split"][k] / ref["tau_unsplit"][k] for k in slow) > 1.2
