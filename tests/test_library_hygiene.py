"""A library call leaves the process as it found it: backend, torch's threads and random stream,
the environment; ``gantrack presets`` and ``import gantrack`` do not even load torch."""

import subprocess
import sys

import pytest

CHECK = r"""
import os, sys
import matplotlib
matplotlib.use("svg")  # what a user chose (a notebook: inline)
import torch
torch.manual_seed(123)
torch.set_num_threads(1)
rng, env = torch.get_rng_state().clone(), dict(os.environ)
import gantrack
assert "torch" in sys.modules  # (imported above by the user; gantrack itself does not need it)
from gantrack import Config, train
run = train(Config(width=0.0625, batch_size=16, steps=2, sample_every=1, threads=2, experiment="hyg"),
            tracking_uri=sys.argv[1], quiet=True)
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert torch.get_num_threads() == 1, torch.get_num_threads()
assert torch.equal(torch.get_rng_state(), rng), "global random stream moved"
changed = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}
assert not changed, changed
print("clean", run)
"""


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_training_leaves_backend_threads_rng_and_environment_alone(where, tmp_path, request):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if where == "sqlite" else request.getfixturevalue("mlflow_server").url
    out = subprocess.run([sys.executable, "-c", CHECK, uri], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize(
    "code",
    [
        "import gantrack; from gantrack.cli import main; main(['presets'])",
        # reading runs: the analysis package loads its submodules when first used
        "from gantrack.analysis import load_runs, RunSet",
    ],
)
def test_import_presets_and_reading_runs_do_not_load_torch_or_plotting(code):
    probe = "; print(sorted(m for m in ('torch', 'matplotlib', 'seaborn') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", "import sys; " + code + probe], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
