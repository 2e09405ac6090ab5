"""The checks of core parameter values beyond their type, at load time (each a ConfigError at the
script's line): worker counts that contradict, log formats and syslog facilities, DNS bounds and servers,
and the folders and accounts wdir, chroot and user/group name. Which values are refused or accepted
without effect is param_policy.py's."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .chroot import ChrootError, check_chroot_dir, outside
from .config_values import L_ALERT, L_DBG, LOG_FORMATS, Pos, parse_nameservers
from .module import ConfigError
from .privileges import PrivilegeError, run_as

if TYPE_CHECKING:
    from .config import CoreConfig

TIMER_WORKERS_WARNING = ("timer_workers accepted: module timers run in the worker that owns the state; "
                         "timer_route runs in worker 0")


def check_worker_param(cfg: CoreConfig, name: str, value: Any, pos: Pos | None,
                       warnings: list[tuple[str, Pos | None]]) -> None:
    """children and udp_workers name one number: both given with different values is an error at the
    second; worker_affinity is "uri" or "callid"; timer_workers is accepted with a warning."""
    other = {"children": "udp_workers", "udp_workers": "children"}.get(name)
    if other is not None and other in cfg.values and cfg.values[other] != value:
        raise ConfigError(f"core parameter '{name}' = {value} contradicts '{other}' = {cfg.values[other]} "
                          f"(children is OpenSIPS's older name of udp_workers: set one)", pos)
    if name == "worker_affinity" and value not in ("uri", "callid"):
        raise ConfigError(f"core parameter 'worker_affinity' expects \"uri\" or \"callid\", got \"{value}\"",
                          pos)
    if name == "timer_workers":
        warnings.append((TIMER_WORKERS_WARNING, pos))


SYSLOG_FACILITIES = ("LOG_AUTH", "LOG_AUTHPRIV", "LOG_CRON", "LOG_DAEMON", "LOG_FTP", "LOG_KERN", "LOG_LPR",
                     "LOG_MAIL", "LOG_NEWS", "LOG_SYSLOG", "LOG_USER", "LOG_UUCP",
                     *(f"LOG_LOCAL{i}" for i in range(8)))


def check_log_param(name: str, value: Any, pos: Pos | None) -> None:
    """The log formats OpenSIPS names (json_cee is refused: no CEE schema here) and syslog(3)'s
    facilities (OpenSIPS: "bad facility (see syslog(3) man page)")."""
    if name in ("stderror_log_format", "syslog_log_format") and value not in LOG_FORMATS:
        extra = " (json_cee, the CEE schema, is not implemented)" if value == "json_cee" else ""
        raise ConfigError(f"core parameter '{name}' expects \"plain_text\" or \"json\", got \"{value}\""
                          f"{extra}", pos)
    if name in ("stderror_level_filter", "syslog_level_filter") and not L_ALERT <= value <= L_DBG:
        raise ConfigError(f"core parameter '{name}': log level {value} out of range ({L_ALERT} .. {L_DBG})",
                          pos)
    if name in ("syslog_facility", "log_facility") and value not in SYSLOG_FACILITIES:
        raise ConfigError(f"core parameter '{name}': bad facility \"{value}\" (see syslog(3): "
                          f"{', '.join(SYSLOG_FACILITIES)})", pos)


def check_dns_param(name: str, value: Any, pos: Pos | None) -> None:
    """Bound the numeric DNS settings; check dns_nameservers (the values we do not implement are
    param_policy.REFUSED)."""
    if name in ("dns_retr_time", "dns_retr_no", "dns_servers_no") and value < 1:
        raise ConfigError(f"core parameter '{name}' must be at least 1, got {value}", pos)
    if name in ("exec_dns_threshold", "execdnsthreshold") and value < 0:
        raise ConfigError(f"core parameter '{name}' must be 0 (off) or a number of microseconds, got {value}",
                          pos)
    if name == "dns_nameservers":
        try:
            parse_nameservers(value)
        except ValueError as exc:
            raise ConfigError(f"core parameter 'dns_nameservers': {exc}", pos) from None


def check_wdir(cfg: CoreConfig) -> None:
    """`wdir` must name an existing folder, at load time (OpenSIPS fails its chdir at start-up); with
    `chroot`, a folder inside the new root (the server changes to it after the chroot)."""
    wdir = cfg.values.get("wdir")
    jail = str(cfg.values.get("chroot") or "")
    if wdir and not os.path.isdir(outside(jail, wdir)):
        where = f" inside the chroot {jail}" if jail else ""
        raise ConfigError(f"wdir: no such directory \"{wdir}\"{where}", cfg.positions.get("wdir"))


def check_chroot(cfg: CoreConfig) -> None:
    """`chroot` must name an existing directory, at load time; kept absolute (the start may not run
    from the folder `routescript check` ran in)."""
    if not cfg.values.get("chroot"):
        return
    try:
        cfg.values["chroot"] = check_chroot_dir(str(cfg.values["chroot"]))
    except ChrootError as exc:
        raise ConfigError(str(exc), cfg.positions.get("chroot")) from None


def check_identity(cfg: CoreConfig) -> None:
    """`user`/`group` must name existing accounts, at load time (so `routescript check` reports them
    with the line)."""
    for names in (("user", "uid"), ("group", "gid")):
        for name in names:
            if not cfg.values.get(name):
                continue
            try:
                run_as(cfg.values[name], "") if names[0] == "user" else run_as("", cfg.values[name])
            except PrivilegeError as exc:
                raise ConfigError(f"core parameter '{name}': {exc}", cfg.positions.get(name)) from None
