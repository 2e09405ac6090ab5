"""Logging the OpenSIPS way: numeric levels (L_ALERT -3 .. L_DBG 4), stderr by default, and every line
written while a message is being handled prefixed with its Call-ID.

The Call-ID travels in a context variable that the server sets for the task handling a message, so
module code logs with a plain `logging.getLogger(...)` and still gets the prefix.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import sys
import weakref

from .config import L_ALERT, L_CRIT, L_DBG, L_ERR, L_INFO, L_NOTICE, L_WARN

NOTICE = 25  # between INFO and WARNING, as syslog has it
logging.addLevelName(NOTICE, "NOTICE")

current_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rs_call_id", default=None)

_TO_PY = {L_ALERT: logging.CRITICAL + 5, L_CRIT: logging.CRITICAL, L_ERR: logging.ERROR,
          L_WARN: logging.WARNING, L_NOTICE: NOTICE, L_INFO: logging.INFO, L_DBG: logging.DEBUG}
logging.addLevelName(logging.CRITICAL + 5, "ALERT")


def py_level(level: int) -> int:
    """OpenSIPS level -> Python logging level. Out-of-range values clamp (0 counts as L_ERR)."""
    if level <= L_ALERT:
        return _TO_PY[L_ALERT]
    if level >= L_DBG:
        return logging.DEBUG
    if level == 0:
        return logging.ERROR
    return _TO_PY[level]


class CallIdFilter(logging.Filter):
    """Adds `record.cid`: "Call-ID <id>: " while a message is handled, else ""."""

    def filter(self, record: logging.LogRecord) -> bool:
        cid = current_call_id.get()
        record.cid = f"[{cid}] " if cid else ""
        return True


FORMAT = "%(asctime)s [%(process)d] %(levelname)s:%(name)s: %(cid)s%(message)s"


# The handlers setup_logging() installed (a later call replaces them, leaving anybody else's), kept here
# rather than marked with an attribute of our own on the stdlib's objects.
_OWNED: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


def setup_logging(log_level: int, *, xlog_level: int | None = None, stderr: bool = True,
                  syslog: bool = False, facility: str = "LOG_DAEMON") -> None:
    """Configure the `routescript` logger tree from the core parameters.

    xlog() lines go to the `routescript.xlog` logger, whose threshold is xlog_level (OpenSIPS 3.x
    filters script logs by xlog_level, independently of log_level)."""
    root = logging.getLogger("routescript")
    logging.getLogger("routescript.xlog").setLevel(py_level(log_level if xlog_level is None else xlog_level))
    for h in list(root.handlers):
        if h in _OWNED:
            root.removeHandler(h)
            h.close()
    root.setLevel(py_level(log_level))
    root.propagate = False
    handlers: list[logging.Handler] = []
    if stderr or not syslog:
        handlers.append(logging.StreamHandler(sys.stderr))
    if syslog:
        # the facility by its constant's name (LOG_DAEMON, LOG_LOCAL0...) on the stdlib class
        fac = getattr(logging.handlers.SysLogHandler, facility, logging.handlers.SysLogHandler.LOG_DAEMON)
        try:
            handlers.append(logging.handlers.SysLogHandler(address="/dev/log", facility=fac))
        except OSError:
            logging.getLogger("routescript.core").warning("syslog not available; logging to stderr")
            if not handlers:
                handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        _OWNED.add(h)
        h.addFilter(CallIdFilter())
        h.setFormatter(logging.Formatter(FORMAT, datefmt="%b %d %H:%M:%S"))
        root.addHandler(h)
