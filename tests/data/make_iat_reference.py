"""Reference values for ``measures.iat_geyer``, computed once with ArviZ 0.23.4 (not a dependency):

    pip install arviz==0.23.4 && python tests/data/make_iat_reference.py > tests/data/iat_reference.json

Per series it records n / ESS two ways:
- ``tau_unsplit``: ArviZ's ESS core on the whole chain (``arviz.stats.diagnostics._ess``), the same
  estimator as ``iat_geyer`` (Geyer's 1992 initial monotone sequence on the autocorrelations) with two
  small differences: ArviZ's autocorrelation subtracts 1/(n-1) at every lag (its variance estimate with
  one chain), and it adds the first discarded lag's ρ back to τ (Vehtari et al. 2021). The test holds
  ``iat_geyer`` to within 1 % of these.
- ``tau_split``: ArviZ's public ``ess(method="mean")``, which splits the chain in two and counts the
  halves' disagreement as between-chain variance: on a slowly mixing series (AR(1), φ = 0.9) it is up
  to 35 % larger. ``iat_geyer`` does not split; the test records the gap rather than hiding it.
"""

import json
import sys

import numpy as np


def series():
    """AR(1) series with φ in {0, 0.5, 0.9} and a sine in noise, numpy seeds 0-2, n = 2000."""
    for phi in (0.0, 0.5, 0.9):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            e = rng.normal(size=2000)
            x = np.zeros(2000)
            for t in range(1, 2000):
                x[t] = phi * x[t - 1] + e[t]
            yield f"ar1 phi={phi} seed={seed}", x
    for seed in range(3):
        rng = np.random.default_rng(seed)
        t = np.arange(2000)
        yield f"sine period=25 seed={seed}", np.sin(2 * np.pi * t / 25) + rng.normal(size=2000)


if __name__ == "__main__":
    import arviz
    from arviz.stats.diagnostics import _ess

    out = {"arviz": arviz.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    out["tau_unsplit"] = {name: len(x) / float(_ess(x[None, :])) for name, x in series()}
    out["tau_split"] = {name: len(x) / float(arviz.ess(x[None, :], method="mean")) for name, x in series()}
    print(json.dumps(out, indent=1))
