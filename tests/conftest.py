import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pgserver import PG_BIN, Postgres, free_port  # noqa: F401  (tests import these from here)

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# One torch thread per process (set before torch is imported, inherited by every process a test starts):
# the suite's models are tiny, and two spinning OpenMP threads per process on a 2-core machine, while a
# test's server or trainer subprocess runs beside it, made steps several times slower (gantrack.cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# The servers the tests start (and `gantrack ui`, which sets the same) run without MLflow's GenAI job
# runner: eight processes and ~25 s of CPU per server start that no test uses (gantrack.ui.UI_ENV).
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
# Every process the suite starts inherits this marker (servers in their own sessions too), so the
# session-end check finds whatever the tests left running, however it was started.
SESSION_MARK = f"GANTRACK_TEST_SESSION={uuid.uuid4().hex}"
os.environ["GANTRACK_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]


def marked_processes() -> list[tuple[int, str]]:
    """(pid, command line) of live processes other than this one that carry the session marker
    (multiprocessing's resource tracker, a helper of this process that ends with it, excepted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if SESSION_MARK.encode() not in env:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            if "multiprocessing.resource_tracker" in cmd and _parent(int(entry)) == os.getpid():
                continue
            found.append((int(entry), cmd[:200]))
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """Fails the session if a process started by the tests outlives them (it is killed, then reported)."""
    yield
    if not os.path.isdir("/proc"):
        return
    deadline = time.time() + 15
    left = marked_processes()
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = marked_processes()
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "processes started by the tests are still running:\n" + "\n".join(f"{p} {c}" for p, c in left)


_started: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    """``subprocess.Popen`` in a new process group, ended (whole group) when the test ends, pass or fail."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    _started.append(proc)
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def end_spawned_processes():
    yield
    while _started:
        kill_group(_started.pop())


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own temp dir: default stores, caches and artifacts land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GANTRACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GANTRACK_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("GANTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    yield


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite tracking URI inside the test's temp dir."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 (a sqlite store unless ``backend`` names another);
    can be stopped and restarted. ``app_name``: e.g. ``basic-auth``."""

    def __init__(self, folder: Path, backend: str | None = None, app_name: str | None = None, env=None):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = backend or f"sqlite:///{folder / 'server.db'}"
        self.app_name = app_name
        self.env = env
        self.proc = None

    def start(self, timeout: float = 90.0) -> None:
        import requests

        self.log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                self.backend,
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--workers",
                "1",
                *(["--app-name", self.app_name] if self.app_name else []),
            ],
            env={**os.environ, **(self.env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                kill_group(self.proc)  # its workers may have outlived it
                raise RuntimeError((self.folder / "server.log").read_text()[-2000:])
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        kill_group(self.proc)
        raise RuntimeError("mlflow server did not start in time")

    def stop(self) -> None:
        if self.proc:
            kill_group(self.proc)  # the server's uvicorn and job workers too (the fixtures call this on teardown)
            self.log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL 15 server for the session (CI installs it; elsewhere the tests skip without it)."""
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not installed at {PG_BIN} (.ci/run installs it)")
        pytest.skip(f"PostgreSQL not installed at {PG_BIN}")
    pg = Postgres()
    try:
        pg.init()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture(scope="session")
def pg_server(postgres, tmp_path_factory):
    """An ``mlflow server`` on the PostgreSQL database, and read rights for ``reader`` once the schema exists."""
    server = MlflowServer(tmp_path_factory.mktemp("pg-server"), backend=postgres.uri())
    server.start()
    postgres.grant_reader()
    yield server
    server.stop()


def cli_in_process(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``gantrack ARGS`` through ``gantrack.cli.main`` in this process: the same parsing, commands and
    one-line error path as the installed command, without a new interpreter importing torch and
    MLflow each time (~4 s a call here). Returns (exit code, stdout, stderr). Each family of errors
    also keeps one test through a real process (the exit code as the shell sees it). The allocator
    setting is process-wide, so it stays with the processes gantrack owns, not pytest's."""
    import gantrack.allocator
    from gantrack.cli import main

    monkeypatch.setattr(gantrack.allocator, "keep_freed_memory", lambda: False)
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err
