"""How many CPU threads a training gets: the cores free for it, not every core of the machine.

Why: torch's default is one thread per core, and its OpenMP workers spin while they wait. Three
trainings started together on 2 cores at 2 threads each took 195.8 s where one thread each took 48.9 s
(issue 25): the spinning workers fight for the cores, and the runs slow down by multiples rather than in
proportion to the cores they get. Two things fix it:

- **threads from the free cores.** A training that does not set ``threads`` takes the cores of its CPU
  affinity less those already claimed by other gantrack trainings on this machine (at least 1, at most
  ``OMP_NUM_THREADS`` when the environment sets it). Each
  training claims its threads in ``$GANTRACK_CACHE_DIR/cores`` (default ``~/.cache/gantrack/cores``) for
  as long as it trains: one small file per process, ignored once that process is gone. Choosing and
  claiming happen under one file lock, so trainings started together see each other.
- **a passive OpenMP wait policy** (``OMP_WAIT_POLICY=PASSIVE``: idle workers sleep instead of spinning)
  in the processes gantrack starts itself — the ``gantrack`` command and the sweep's or study's worker
  processes — unless the environment already sets one. In a user's own Python process gantrack leaves
  the environment as found (OpenMP reads it once, when torch is first imported, before gantrack can act).
  ``benchmarks/bench_concurrent.py`` measures both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .paths import cache_dir

WAIT_POLICY = "PASSIVE"


def passive_wait_policy(env: dict | None = None) -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``env`` (default ``os.environ``) unless it names a policy already;
    only for processes gantrack owns, and only before torch is imported there."""
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity; a container's cpuset shows here, not in cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def claims_dir() -> Path:
    return cache_dir("cores")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it names a positive count: the user's cap on threads per process."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        return None
    return n if n > 0 else None


def claimed_by_others(folder: Path | None = None) -> int:
    """Threads claimed by live gantrack trainings other than this process (stale claims are removed)."""
    folder = folder or claims_dir()
    total = 0
    for f in folder.glob("*.json"):
        try:
            pid = int(f.stem)
            threads = int(json.loads(f.read_text())["threads"])
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if pid == os.getpid():
            continue
        if not _alive(pid):
            f.unlink(missing_ok=True)
            continue
        total += max(0, threads)
    return total


def free_cores(folder: Path | None = None) -> int:
    """Cores not claimed by other gantrack trainings here (at least 1)."""
    try:
        return max(1, machine_cores() - claimed_by_others(folder))
    except OSError:  # no writable cache: every core counts as free, as torch's default has it
        return machine_cores()


@contextlib.contextmanager
def claim(requested: int = 0, folder: Path | None = None) -> Iterator[int]:
    """Claim threads for one training and yield how many: ``requested`` when it is set (a user's or a
    sweep's explicit choice, still claimed so others see it), else the free cores, at most
    ``OMP_NUM_THREADS`` where the environment sets it. A process's nested
    claims (a sweep worker training twice) replace each other; the claim is released on exit."""
    folder = folder or claims_dir()
    mine = folder / f"{os.getpid()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # choose and claim atomically: simultaneous starts see each other
            threads = requested or min(max(1, machine_cores() - claimed_by_others(folder)), env_threads() or 1 << 30)
            mine.write_text(json.dumps({"threads": threads}))
    except OSError:  # a read-only home: fall back to the explicit choice or every core, unclaimed
        yield requested or machine_cores()
        return
    try:
        yield threads
    finally:
        mine.unlink(missing_ok=True)
