"""gantrack: train GANs, log every loss component to MLflow, and explain the curves.

Public API:

- ``Config``, ``preset(name)``, ``PRESETS``: training configurations (plain dataclass).
- ``train(config, tracking_uri=None, quiet=False) -> run_id``: train and log to MLflow.
- ``gantrack.analysis``: ``load_runs``, ``oscillation``, ``oscillation_pairs``, ``explain``, ...
"""

__version__ = "0.1.0"

from .config import PRESETS, Config, preset  # noqa: E402
from .errors import GantrackError  # noqa: E402
from .harness import train  # noqa: E402

__all__ = ["Config", "PRESETS", "preset", "train", "GantrackError", "__version__"]
