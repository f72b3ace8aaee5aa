"""The one channel for what gantrack says while it works (a store outage, a result not logged back):
warnings to the ``gantrack`` logger. A program that configures logging receives them through its own
handlers; otherwise Python prints them to stderr as they are. Each starts with "gantrack: ".
Command output (run ids, report paths) is the CLI's and goes to stdout."""

from __future__ import annotations

import logging

log = logging.getLogger("gantrack")


def warn(text: str, *args) -> None:
    """One warning line (``text % args``, formatted only when it is emitted)."""
    log.warning("gantrack: " + text, *args)
