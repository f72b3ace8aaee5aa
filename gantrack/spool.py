"""What a run could not write to its store, kept on disk until ``gantrack sync`` puts it there.

When the store fails for good during a run (a full disk, a locked or read-only database, a server that
is gone), ``TrackedRun`` keeps everything the run still produces in one folder per run:

    <spool dir>/<run id>/
        manifest.json    the store's URI, the run id, the status the run reached, the cause, its tags,
                         and the artifacts and images below with where they go
        metrics.jsonl    every metric that never got through, one JSON object a line
        artifacts/...    the final artifacts (weights, per-sample probes, plots, samples), as files

``sync(folder)`` uploads metrics, artifacts, images and tags to the recorded store (``--tracking-uri``
to override) and sets the status the run reached; the folder is renamed ``*.synced`` afterwards.
The spool directory is ``$GANTRACK_SPOOL_DIR`` or ``~/.cache/gantrack/spool``. A spool must not live on
the store's full disk: set ``GANTRACK_SPOOL_DIR`` elsewhere when the store's disk is the home disk.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from .errors import GantrackError, store_failure
from .paths import own_dir

MANIFEST, METRICS = "manifest.json", "metrics.jsonl"


def spool_dir() -> Path:
    return own_dir("GANTRACK_SPOOL_DIR", "spool")


class Spool:
    """One run's spool folder: ``add_*`` while the run ends, ``close`` writes the manifest."""

    def __init__(self, folder: Path, run_id: str, tracking_uri: str, cause: str):
        self.folder = folder
        self.manifest = {
            "run_id": run_id,
            "tracking_uri": tracking_uri,
            "cause": cause,
            "status": None,
            "tags": {},
            "artifacts": [],
            "images": [],
            "spooled_at": int(time.time()),
        }
        (folder / "artifacts").mkdir(parents=True, exist_ok=True)
        self._write()

    @classmethod
    def open(cls, run_id: str, tracking_uri: str, cause: str) -> Spool:
        folder = spool_dir() / run_id
        if (folder / MANIFEST).is_file():  # a resumed run that spooled before: add to it
            self = cls.__new__(cls)
            self.folder = folder
            self.manifest = json.loads((folder / MANIFEST).read_text())
            self.manifest["cause"] = cause
            return self
        return cls(folder, run_id, tracking_uri, cause)

    def add_metrics(self, metrics) -> None:
        with (self.folder / METRICS).open("a") as f:
            for m in metrics:
                value = m.value if math.isfinite(m.value) else str(m.value)
                f.write(json.dumps({"key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step}) + "\n")

    def add_artifact(self, local: str | Path, folder: str | None) -> None:
        local = Path(local)
        rel = Path("artifacts") / (folder or "") / local.name
        (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            shutil.copytree(local, self.folder / rel, dirs_exist_ok=True)
        else:
            shutil.copy2(local, self.folder / rel)
        self.manifest["artifacts"].append({"path": str(rel), "folder": folder, "dir": local.is_dir()})
        self._write()

    def add_image(self, image, key: str, step: int) -> None:
        import numpy as np

        rel = Path("artifacts") / "_images" / f"{key.replace('/', '_')}-{step:08d}.npy"
        (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(self.folder / rel, np.asarray(image), allow_pickle=False)
        self.manifest["images"].append({"path": str(rel), "key": key, "step": int(step)})
        self._write()

    def add_tag(self, key: str, value: str) -> None:
        self.manifest["tags"][key] = value
        self._write()

    def close(self, status: str) -> Path:
        """The status the run reached (what ``sync`` will set); returns the folder."""
        self.manifest["status"] = status
        self._write()
        return self.folder

    def _write(self) -> None:
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        os.replace(tmp, self.folder / MANIFEST)


def sync(path: str | Path, tracking_uri: str | None = None) -> tuple[int, int, str]:
    """Upload a spool folder (or a legacy ``<run id>.jsonl`` file) to the store it records (or
    ``tracking_uri``): metrics, artifacts, images and tags, then the status the run reached.
    Returns (metrics, artifacts, status); the folder is renamed ``*.synced``."""
    from mlflow.entities import Metric

    from .tracking import open_store, sync_spool

    p = Path(path)
    if p.is_file():
        return sync_spool(p, tracking_uri), 0, ""
    if not (p / MANIFEST).is_file():
        raise GantrackError(f"{p} is not a gantrack spool folder (no {MANIFEST})")
    try:
        manifest = json.loads((p / MANIFEST).read_text())
        run_id = manifest["run_id"]
        metrics = []
        if (p / METRICS).is_file():
            for line in (p / METRICS).read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    metrics.append(Metric(str(r["key"]), float(r["value"]), int(r["timestamp"]), int(r["step"])))
    except (ValueError, KeyError, TypeError) as e:
        raise GantrackError(f"{p} is a damaged spool folder: {e}") from None
    store = open_store(tracking_uri or manifest.get("tracking_uri"))
    try:
        store.client.get_run(run_id)
    except Exception:
        raise GantrackError(f"run {run_id} from {p} does not exist in {store.uri}") from None
    try:
        return _upload(p, manifest, metrics, store, run_id)
    except GantrackError:
        raise
    except Exception as e:  # the store still fails: say why in one line and keep the folder for next time
        from .errors import first_line

        raise GantrackError(
            f"cannot sync {p} to {store.uri}: {store_failure(e)} ({first_line(e, 160)}); the folder is kept"
        ) from None


def _upload(p: Path, manifest: dict, metrics: list, store, run_id: str) -> tuple[int, int, str]:
    import numpy as np

    from . import contract as C
    from .tracking import retry

    for i in range(0, len(metrics), 1000):
        retry(store.client.log_batch, run_id, metrics=metrics[i : i + 1000])
    n_art = 0
    for a in manifest["artifacts"]:
        local = p / a["path"]
        if a.get("dir"):
            dest = "/".join(x for x in (a["folder"], local.name) if x)
            retry(store.client.log_artifacts, run_id, str(local), dest)
        else:
            retry(store.client.log_artifact, run_id, str(local), a["folder"])
        n_art += 1
    for im in manifest["images"]:
        image = np.load(p / im["path"], allow_pickle=False)
        retry(store.client.log_image, run_id, image, key=im["key"], step=im["step"], synchronous=True)
        n_art += 1
    for k, v in manifest["tags"].items():
        retry(store.client.set_tag, run_id, k, v)
    status = manifest.get("status") or "FAILED"
    retry(store.client.set_tag, run_id, C.TAG_SYNCED_FROM, str(p))
    retry(store.client.set_tag, run_id, C.TAG_STATUS, status.lower())
    if status == "FINISHED" and C.TAG_FAILURE in store.client.get_run(run_id).data.tags:
        retry(store.client.delete_tag, run_id, C.TAG_FAILURE)  # the interim "store failed" reason
    retry(store.client.set_terminated, run_id, status, end_time=int(time.time() * 1000))
    p.rename(p.with_name(p.name + ".synced"))
    return len(metrics), n_art, status
