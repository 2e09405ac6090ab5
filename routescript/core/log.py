"""Logging the OpenSIPS way: numeric levels (L_ALERT -3 .. L_DBG 4), stderr by default, and every line
written while a message is being handled prefixed with its Call-ID.

The Call-ID travels in a context variable that the server sets for the task handling a message, so
module code logs with a plain `logging.getLogger(...)` and still gets the prefix.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import logging.handlers
import sys
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .config import L_ALERT, L_CRIT, L_DBG, L_ERR, L_INFO, L_NOTICE, L_WARN

if TYPE_CHECKING:
    from .config import CoreConfig

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


# Local time with the year and milliseconds (OpenSIPS prints "Dec  7 00:44:29": no year, no fraction,
# which makes lines of two years or of one busy second impossible to order).
FORMAT = "%(asctime)s.%(msecs)03d [%(process)d] %(levelname)s:%(name)s: %(cid)s%(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# syslog stamps the time itself, and the ident carries the name and pid
SYSLOG_FORMAT = "%(levelname)s:%(name)s: %(cid)s%(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with OpenSIPS's keys (dprint.c, log format "json": time, pid, level,
    module, message) and ours: call_id while a message is handled, exception with its traceback. The
    time is ISO 8601 with milliseconds and the UTC offset. Written on json.dumps: python-json-logger
    would add a dependency for these few keys."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created).astimezone()
        entry: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds"), "pid": record.process,
            "level": record.levelname, "module": record.name, "message": record.getMessage()}
        cid = current_call_id.get()
        if cid:
            entry["call_id"] = cid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Where log lines go and how they look, from the core parameters (docs/operations.md, "Logs")."""

    log_level: int = L_NOTICE
    xlog_level: int | None = None
    stderr: bool = True
    syslog: bool = False
    facility: str = "LOG_DAEMON"
    syslog_name: str = "routescript"
    syslog_socket: str = "/dev/log"
    stderr_format: str = "plain_text"
    syslog_format: str = "plain_text"
    # stderror_level_filter / syslog_level_filter: a consumer takes only the lines at or above this
    # level as well (OpenSIPS 3.3+); None: every line that passed log_level / xlog_level
    stderr_filter: int | None = None
    syslog_filter: int | None = None

    @classmethod
    def of(cls, cfg: CoreConfig) -> LogSettings:
        return cls(cfg.log_level, cfg.xlog_level, cfg.stderror_enabled, cfg.syslog_enabled,
                   cfg.syslog_facility, cfg.syslog_name, str(cfg.get("syslog_socket")),
                   str(cfg.get("stderror_log_format")), str(cfg.get("syslog_log_format")),
                   cfg.get("stderror_level_filter"), cfg.get("syslog_level_filter"))


# The handlers setup_logging() installed (a later call replaces them, leaving anybody else's), kept here
# rather than marked with an attribute of our own on the stdlib's objects.
_OWNED: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


def setup_logging(settings: LogSettings) -> None:
    """Configure the `routescript` logger tree from the core parameters.

    xlog() lines go to the `routescript.xlog` logger, whose threshold is xlog_level (OpenSIPS 3.x
    filters script logs by xlog_level, independently of log_level). Logs go to stderr, to syslog, or
    both; never nowhere (no consumer enabled: stderr)."""
    root = logging.getLogger("routescript")
    xlog_level = settings.log_level if settings.xlog_level is None else settings.xlog_level
    logging.getLogger("routescript.xlog").setLevel(py_level(xlog_level))
    for h in list(root.handlers):
        if h in _OWNED:
            root.removeHandler(h)
            h.close()
    root.setLevel(py_level(settings.log_level))
    root.propagate = False
    handlers: list[tuple[logging.Handler, logging.Formatter]] = []
    if settings.syslog:
        try:
            handlers.append((_filtered(_syslog_handler(settings), settings.syslog_filter),
                             _formatter(settings.syslog_format, SYSLOG_FORMAT)))
        except OSError as exc:
            logging.getLogger("routescript.core").warning(
                "syslog not available at %s (%s): logging to stderr", settings.syslog_socket,
                exc.strerror or exc)
    if settings.stderr or not handlers:
        handlers.append((_filtered(logging.StreamHandler(sys.stderr), settings.stderr_filter),
                         _formatter(settings.stderr_format, FORMAT)))
    for h, formatter in handlers:
        _OWNED.add(h)
        h.addFilter(CallIdFilter())
        h.setFormatter(formatter)
        root.addHandler(h)


def _filtered(handler: logging.Handler, level: int | None) -> logging.Handler:
    """The handler, passing only lines at OpenSIPS level `level` or more severe (None: every line)."""
    if level is not None:
        handler.setLevel(py_level(level))
    return handler


def _formatter(kind: str, text_format: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter()
    return logging.Formatter(text_format, datefmt=DATE_FORMAT)


class _SysLogHandler(logging.handlers.SysLogHandler):
    """The stdlib's, with syslog's own priorities for our NOTICE and ALERT levels (it sends any level
    it does not know as "warning")."""

    priority_map: ClassVar[dict[str, str]] = {**logging.handlers.SysLogHandler.priority_map,
                                              "NOTICE": "notice", "ALERT": "alert"}

    def __init__(self, name: str, address: str, facility: int) -> None:
        super().__init__(address=address, facility=facility)
        self._name = name

    def emit(self, record: logging.LogRecord) -> None:
        # "name[pid]: " as syslog(3) tags lines; the pid of the process logging (a worker forked
        # after this handler was made has its own)
        self.ident = f"{self._name}[{record.process}]: "
        super().emit(record)


def _syslog_handler(settings: LogSettings) -> logging.Handler:
    """SysLogHandler on the local socket (a unix datagram socket, /dev/log), lines tagged
    "syslog_name[pid]: " as syslog(3) tags them. OSError when the socket is not there."""
    handlers = logging.handlers.SysLogHandler
    facility = getattr(handlers, settings.facility, handlers.LOG_DAEMON)   # LOG_LOCAL0 -> its number
    return _SysLogHandler(settings.syslog_name, settings.syslog_socket, facility)
