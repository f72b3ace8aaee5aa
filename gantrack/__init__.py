"""gantrack: train GANs, log every loss component to MLflow, and explain the curves.

Public API:

- ``Config``, ``preset(name)``, ``PRESETS``: training configurations (plain dataclass).
- ``train(config, tracking_uri=None, quiet=False) -> run_id``: train and log to MLflow.
- ``LoopProbes(D, loss=..., order=...)``: the same metrics and probes from your own training loop.
- ``gantrack.analysis``: ``load_runs``, ``oscillation``, ``oscillation_pairs``, ``explain``, ``diagnose``, ...
- ``gantrack.importers.import_file``: runs from other tools' logs (``gantrack import``).

Importing gantrack changes nothing in the process (no matplotlib backend, no torch settings, no
environment variables) and does not import torch until ``train`` is first used.
"""

__version__ = "0.1.0"

from .config import PRESETS, Config, preset  # noqa: E402
from .errors import GantrackError  # noqa: E402

__all__ = ["Config", "PRESETS", "preset", "train", "LoopProbes", "GantrackError", "__version__"]


def __getattr__(name: str):
    # the harness and the loop probes import torch: only when they are asked for
    if name == "train":
        from .harness import train

        return train
    if name == "LoopProbes":
        from .loop import LoopProbes

        return LoopProbes
    raise AttributeError(f"module 'gantrack' has no attribute {name!r}")
