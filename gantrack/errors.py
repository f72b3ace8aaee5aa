"""Errors a user can act on.

Every error that comes from bad input (a config, a file, a URI, a run id) is a
``GantrackError``: the CLI prints its message as one line and exits with code 2.
"""


class GantrackError(Exception):
    """Bad input or an unusable environment; the message is meant for the user."""


class TrainingDiverged(GantrackError):
    """A loss became NaN or infinite and the run was stopped (see ``allow_nan``)."""


class RunSpooled(GantrackError):
    """The store failed for good during the run; what it could not take is in a spool folder."""

    def __init__(self, run_id: str, folder, cause: str, marked: bool):
        self.run_id, self.folder, self.cause = run_id, folder, cause
        state = "marked FAILED until synced" if marked else "left RUNNING (the store took no status either)"
        super().__init__(
            f"run {run_id}: the store failed ({cause}); its metrics, artifacts and final status are spooled to "
            f"{folder} and the run is {state}. Once the store works again: gantrack sync {folder}"
        )


def first_line(e: BaseException, limit: int = 300, prefer: tuple[str, ...] = ()) -> str:
    """The first non-blank line of ``e``'s message (its type name when empty), for one-line errors.

    ``prefer``: take the first line containing one of these instead, when there is one (SQLAlchemy
    puts its own notes before the database's message, e.g. "permission denied for table ...");
    SQLAlchemy's autoflush and background-link notes are skipped.
    libpq prefixes every connection failure with 'connection to server at "h", port p failed:';
    that prefix is dropped so the reason (a wrong password, a missing database) is what shows.
    """
    # SQLAlchemy wraps the database's message in notes of its own: never the reason
    notes = ("(raised as a result of", "(Background on this error")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(notes)]
    preferred = [ln for ln in lines if any(word in ln for word in prefer)]
    text = (preferred or lines or [type(e).__name__])[0]
    if "connection to server" in text and "failed:" in text:
        text = text.split("failed:", 1)[1].strip() or text
    return text[:limit]


def store_failure(e: BaseException) -> str:
    """The cause of a store error in the words a user acts on: "disk full", "database locked",
    "permission denied", "read-only store", "server unreachable" — or its first line."""
    text = f"{type(e).__name__}: {e}".lower()
    errno = getattr(e, "errno", None) or getattr(getattr(e, "orig", None), "errno", None)
    if errno == 28 or "disk is full" in text or "no space left" in text or "disk full" in text:
        return "disk full"
    if "database is locked" in text or "database table is locked" in text:
        return "database locked"
    if "readonly database" in text or "read-only file system" in text or errno == 30:
        return "read-only store"
    if errno == 13 or "permission denied" in text:
        return "permission denied"
    if any(w in text for w in ("connection", "refused", "max retries", "timed out", "unreachable", "503")):
        return "server unreachable"
    return first_line(e, 160)
