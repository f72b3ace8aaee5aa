"""A throwaway PostgreSQL server for the tests and the load benchmark: a temp folder, 127.0.0.1, a free port."""

import os
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    """$GANTRACK_PG_BIN, else the newest Debian PostgreSQL install (15 on these machines)."""
    if os.environ.get("GANTRACK_PG_BIN"):
        return Path(os.environ["GANTRACK_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


class Postgres:
    """A real PostgreSQL server in a temp folder on 127.0.0.1 and a free port.

    PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user (``runuser``);
    the folder is made outside pytest's root-only temp tree. Roles: the superuser ``postgres``,
    ``mlflow`` (owns database ``mlflow``: what the server writes with) and ``reader`` (read-only).
    """

    SUPER_PW, MLFLOW_PW, READER_PW = "super-secret-1", "mlflow-secret-2", "reader-secret-3"

    def __init__(self):
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="gantrack-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)

    def _run(self, *cmd: str) -> None:
        full = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(cmd)
        out = subprocess.run(full, capture_output=True, text=True, timeout=120, cwd=self.folder)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")

    def init(self) -> None:
        pwfile = self.folder / "pw"
        pwfile.write_text(self.SUPER_PW)
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        self.start()
        self.sql(
            f"CREATE ROLE mlflow LOGIN PASSWORD '{self.MLFLOW_PW}'",
            "CREATE DATABASE mlflow OWNER mlflow",
            f"CREATE ROLE reader LOGIN PASSWORD '{self.READER_PW}'",
            "CREATE ROLE nobody LOGIN PASSWORD 'nobody-pw'",
        )

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c full_page_writes=off"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def uri(self, user: str = "mlflow", password: str | None = None, db: str = "mlflow") -> str:
        pw = password or {"postgres": self.SUPER_PW, "mlflow": self.MLFLOW_PW, "reader": self.READER_PW}[user]
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{db}"

    def sql(self, *statements: str, db: str = "postgres", user: str = "postgres") -> list:
        import psycopg

        with psycopg.connect(self.uri(user, db=db), autocommit=True) as con:
            out = []
            for st in statements:
                cur = con.execute(st)
                out.append(cur.fetchall() if cur.description else None)
            return out

    def grant_reader(self) -> None:
        """Read rights for ``reader`` on every table MLflow created (run after the schema exists)."""
        self.sql(
            "GRANT CONNECT ON DATABASE mlflow TO reader",
            "GRANT USAGE ON SCHEMA public TO reader",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader",
            db="mlflow",
            user="mlflow",
        )

    def cleanup(self) -> None:
        import shutil

        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
