"""OpenSIPS core global parameters (`log_level = 3`, `socket = udp:127.0.0.1:5060`, ...), typed.

Each parameter has a kind; `apply_globals` turns the script's global assignments into a `CoreConfig`.
Every parameter OpenSIPS 3.4 accepts is typed here and is either built, accepted without effect (with
the reason logged at start), or refused at load for any value but the one that matches what routescript
does (param_policy.py; the full list with what each does: docs/core-parameters.md). A name OpenSIPS 3.4
itself does not know (`port = 5060`, a typo) is an error, as OpenSIPS refuses it: `unknown_globals`
lists them.

The worker parameters (`udp_workers`/`children`, `tcp_workers`, `socket= ... use_workers K`, ours
`worker_affinity` and `worker_restart_backoff`) are typed and checked here and read through
`CoreConfig.worker_plan()` (routescript/workers/plan.py computes N_total); `timer_workers` is accepted with
a warning (docs/workers.md, section 1).

Where the parts are: config_values.py types the values (yes/no, integers, log levels, networks, DNS
servers), config_sockets.py the socket= lines, config_checks.py checks values beyond their type
(contradicting worker counts, log formats, DNS bounds, wdir/chroot/user); param_policy.py says which
values are refused or accepted without effect. This file holds the parameter table (KNOWN_GLOBALS,
OPENSIPS_CORE_PARAMS), CoreConfig and apply_globals, which puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config_checks import (
    TIMER_WORKERS_WARNING,
    check_chroot,
    check_dns_param,
    check_identity,
    check_log_param,
    check_wdir,
    check_worker_param,
)
from .config_sockets import DEFAULT_SOCKET, ListenSpec, parse_socket, socket_of
from .config_values import (
    KIND_PARSERS,
    L_ALERT,
    L_CRIT,
    L_DBG,
    L_ERR,
    L_INFO,
    L_NOTICE,
    L_WARN,
    LOG_LEVEL_NAMES,
    Pos,
    parse_log_level,
    parse_nameservers,
)
from .environ import expand_env
from .module import ConfigError
from .netlist import NetworkList
from .param_policy import accepted_note, refusal
from .privileges import RunAs, run_as

if TYPE_CHECKING:
    from routescript.resolve.resolver import DnsSettings
    from routescript.workers.plan import WorkerPlan

# Kept importable from here, where the rest of routescript has always found them.
__all__ = ["DEFAULT_SOCKET", "KNOWN_GLOBALS", "L_ALERT", "L_CRIT", "L_DBG", "L_ERR", "L_INFO", "L_NOTICE",
           "L_WARN", "LOG_LEVEL_NAMES", "OPENSIPS_CORE_PARAMS", "TIMER_WORKERS_WARNING", "CoreConfig",
           "ListenSpec", "Pos", "apply_globals", "canonical_name", "parse_log_level", "parse_nameservers",
           "parse_socket", "unknown_globals"]

# name -> (kind, default, repeatable). kinds: "int", "bool", "str", "socket", "networks" (a NetworkList:
# IP addresses and networks separated by commas or blanks).
# Names follow the OpenSIPS 3.x core parameter list; a few 2.x spellings are aliases.
# The values are Any: each parameter's kind says which of int, bool, str or NetworkList it holds.
KNOWN_GLOBALS: dict[str, tuple[str, Any, bool]] = {
    "socket": ("socket", None, True),
    "listen": ("socket", None, True),
    "log_level": ("int", L_NOTICE, False),
    "debug": ("int", L_NOTICE, False),           # OpenSIPS 1.x name of log_level
    "xlog_level": ("int", None, False),          # threshold for xlog messages (default: log_level)
    "xlog_print_level": ("int", L_ERR, False),   # level of xlog() without an explicit level
    "stderror_enabled": ("bool", True, False),
    "log_stderror": ("bool", True, False),       # 2.x name
    "syslog_enabled": ("bool", False, False),
    "syslog_facility": ("str", "LOG_DAEMON", False),
    "log_facility": ("str", "LOG_DAEMON", False),
    "syslog_name": ("str", "routescript", False),
    "log_name": ("str", "routescript", False),
    # OpenSIPS 3.x: "plain_text" or "json" for each log consumer (core/log.py; "json_cee" is refused)
    "stderror_log_format": ("str", "plain_text", False),
    "syslog_log_format": ("str", "plain_text", False),
    # routescript's own: where syslog lines go (the local syslog daemon's socket; a test's fake one)
    "syslog_socket": ("str", "/dev/log", False),
    # routescript's own (OpenSIPS takes it as -P only): the process id written there once the SIP
    # sockets are bound, removed at exit (core/pidfile.py)
    "pid_file": ("str", "", False),
    # routescript's own: seconds a stop (SIGTERM) may take, in-flight messages and database writes
    # included, before what is left is abandoned (docs/operations.md, "Stopping")
    "shutdown_timeout": ("int", 5, False),
    "udp_workers": ("int", 1, False),
    "tcp_workers": ("int", 1, False),
    "children": ("int", 1, False),
    "timer_workers": ("int", 1, False),
    # routescript's own (docs/workers.md): which key sends a message to its worker ("uri": PUBLISH and
    # initial SUBSCRIBE by the Request-URI, the rest by Call-ID; "callid": everything by Call-ID), and the
    # longest wait, in seconds, before a crashed worker is started again.
    "worker_affinity": ("str", "uri", False),
    "worker_restart_backoff": ("int", 30, False),
    "mpath": ("str", "", False),
    "server_header": ("str", "", False),
    "user_agent_header": ("str", "", False),
    "server_signature": ("bool", True, False),
    "alias": ("str", None, True),
    "advertised_address": ("str", "", False),
    "advertised_port": ("int", 0, False),
    "tcp_connection_lifetime": ("int", 120, False),
    "tcp_max_connections": ("int", 2048, False),
    # OpenSIPS: seconds a TCP message may take to arrive whole once begun (a trickling peer is cut off).
    "tcp_max_msg_time": ("int", 4, False),
    # routescript's own (OpenSIPS has no per-address bound): accepted TCP connections from one address
    # (0: no limit), so that one address cannot hold all tcp_max_connections and lock every other
    # client out; the addresses/networks of tcp_trusted_sources (an edge proxy) are exempt.
    "tcp_max_connections_per_ip": ("int", 256, False),
    "tcp_trusted_sources": ("networks", "", False),
    # ms an outgoing TCP/TLS connect may take; None: 5000 (OpenSIPS's 100 ms bounds only its blocking
    # connect, after which tcp_async carries on in the background for much longer)
    "tcp_connect_timeout": ("int", None, False),
    "tcp_no_new_conn_bflag": ("str", "", False),
    # raised to at start when above the current limit (resource_limits.py); 0: left as it is
    "open_files_limit": ("int", 0, False),
    # OpenSIPS enables core dumps (RLIMIT_CORE unlimited) unless this is yes; here yes sets it to 0 and
    # no leaves the system's limit (resource_limits.py)
    "disable_core_dump": ("bool", False, False),
    # OpenSIPS autoprobes up to 256 KB; we ask for 4 MiB at once (capped by net.core.rmem_max): a
    # NOTIFY fan-out's answers arrive in bursts that overflow smaller buffers (transport/layer.py).
    "maxbuffer": ("int", 4 * 1024 * 1024, False),
    # routescript's own (OpenSIPS has none): a request that waited longer than this many ms between
    # its arrival and its turn is answered 503 + Retry-After instead of being run (0: never). Its
    # client retransmits after 500 ms (T1): answering it later doubles the load just when there is too
    # much (server.py, Server._too_late, says how 250 was chosen).
    "queue_delay_limit": ("int", 250, False),
    # routescript's own: MI commands that walk a whole table (subs_phtable_list, pres_phtable_list,
    # pres_expose) running at once; one more is answered with MI error 503 (routescript/mi/registry.py).
    "mi_max_walks": ("int", 2, False),
    "max_while_loops": ("int", 10000, False),
    # yes: log_level L_DBG, to standard error, not to syslog (OpenSIPS cfg.y; docs/core-parameters.md)
    "debug_mode": ("bool", False, False),
    "db_default_url": ("str", "", False),
    "db_version_table": ("str", "version", False),
    # DNS (routescript/resolve, docs/dns.md). `dns`/`rev_dns` = yes (look the Via host up to decide on
    # received=) and `disable_dns_blacklist` = no are refused (_check_dns says why); None: resolv.conf's.
    "dns": ("bool", False, False),
    "rev_dns": ("bool", False, False),
    "dns_try_ipv6": ("bool", False, False),
    "dns_try_naptr": ("bool", True, False),
    "dns_retr_time": ("int", None, False),
    "dns_retr_no": ("int", None, False),
    "dns_servers_no": ("int", None, False),
    "dns_use_search_list": ("bool", True, False),
    "disable_dns_failover": ("bool", False, False),
    "disable_dns_blacklist": ("bool", True, False),
    # routescript's own: the DNS servers to ask instead of /etc/resolv.conf's ("127.0.0.1:5353, ::1";
    # port 53 when none), and the hosts file read before DNS.
    "dns_nameservers": ("str", "", False),
    "dns_hosts_file": ("str", "/etc/hosts", False),
    "auto_aliases": ("bool", False, False),
    "check_via": ("bool", False, False),
    "enable_asserts": ("bool", False, False),
    "abort_on_assert": ("bool", False, False),
    "shm_hash_split_percentage": ("int", 1, False),
    "mem_warming": ("bool", False, False),
    "mem_dump": ("int", 0, False),
    # OpenSIPS's working directory: the server changes to it at start, before dropping privileges
    # (confinement.py); relative paths the modules open later (an SQLite file) are then read from it.
    "wdir": ("str", "", False),
    "workdir": ("str", "", False),               # OpenSIPS's other name of wdir
    # Security settings are never accepted and ignored (privileges.py, chroot.py): `chroot` and
    # `user`/`group` confine the server once its SIP sockets are bound.
    "chroot": ("str", "", False),
    "user": ("str", "", False),
    "uid": ("str", "", False),                   # OpenSIPS's other name of user
    "group": ("str", "", False),
    "gid": ("str", "", False),                   # OpenSIPS's other name of group
    "event_pkg_threshold": ("int", 0, False),
    "event_shm_threshold": ("int", 0, False),
    "exec_msg_threshold": ("int", 0, False),
    "execmsgthreshold": ("int", 0, False),
    # microseconds: a DNS query slower than this logs a warning (routescript/resolve/lookup.py)
    "exec_dns_threshold": ("int", 0, False),
    "execdnsthreshold": ("int", 0, False),       # OpenSIPS's older name of exec_dns_threshold
    "tcp_threshold": ("int", 0, False),
    "tcpthreshold": ("int", 0, False),
    "query_buffer_size": ("int", 0, False),
    "query_flush_time": ("int", 0, False),
    "sip_warning": ("bool", False, False),
    "mhomed": ("bool", False, False),
    # OpenSIPS 3.3+: a second threshold per log consumer (None: log_level alone)
    "stderror_level_filter": ("int", None, False),
    "syslog_level_filter": ("int", None, False),
    # tm: a 503 chosen as the final answer goes upstream as 500 (RFC 3261 16.7 step 6) unless yes
    "disable_503_translation": ("bool", False, False),
    # yes: a response that matches no transaction is dropped, not sent on by its Via (dispatch.py)
    "disable_stateless_fwd": ("bool", False, False),
    "xlog_buf_size": ("int", 4096, False),
    "xlog_force_color": ("bool", False, False),
    "tos": ("str", "", False),
    "dont_fork": ("bool", True, False),          # 2.x: routescript always runs in the foreground
    "fork": ("bool", False, False),              # 2.x
    "restart_persistency_cache_file": ("str", "", False),
    "restart_persistency_size": ("str", "", False),
    "poll_method": ("str", "", False),
    # OpenSIPS parameters accepted without effect or refused unless at our value (param_policy.py)
    "mem": ("int", 0, False),
    "shm_secondary_hash_size": ("int", 0, False),
    "shm_memlog_size": ("int", 0, False),
    "mem_warming_enabled": ("bool", False, False),
    "mem_warming_pattern_file": ("str", "", False),
    "mem_warming_percentage": ("int", 0, False),
    "memdump": ("int", 0, False),
    "mem_log": ("int", 0, False),
    "memlog": ("int", 0, False),
    "pv_print_buf_size": ("int", 0, False),
    "log_msg_buf_size": ("int", 0, False),
    "log_json_buf_size": ("int", 0, False),
    "tcp_parallel_read_on_workers": ("bool", False, False),
    "db_max_async_connections": ("int", 0, False),
    "dst_blacklist": ("str", "", True),
    "tcp_no_new_conn_rplflag": ("str", "", False),
    "tcp_accept_aliases": ("bool", False, False),
    "tcp_keepalive": ("bool", True, False),   # OpenSIPS: on by default
    "tcp_keepcount": ("int", None, False),
    "tcp_keepidle": ("int", None, False),
    "tcp_keepinterval": ("int", None, False),
    "tcp_socket_backlog": ("int", None, False),
    "log_event_enabled": ("bool", False, False),
    "log_event_level_filter": ("int", None, False),
    "log_prefix": ("str", "", False),
    "log_stdout": ("bool", False, False),
    "mcast_loopback": ("bool", False, False),
    "mcast_ttl": ("int", None, False),
    "auto_scaling_profile": ("str", "", False),
    "auto_scaling_cycle": ("int", None, False),
}

# The core parameters of OpenSIPS 3.4 (the `name = value` assignments its cfg.y accepts; read from its
# cfg.lex): every one is in KNOWN_GLOBALS (a test checks it); any other name is refused.
OPENSIPS_CORE_PARAMS = frozenset({
    "abort_on_assert", "advertised_address", "advertised_port", "alias", "auto_aliases",
    "auto_scaling_cycle", "auto_scaling_profile", "check_via", "chroot", "db_default_url",
    "db_max_async_connections", "db_version_table", "debug_mode", "disable_503_translation",
    "disable_core_dump", "disable_dns_blacklist", "disable_dns_failover", "disable_stateless_fwd", "dns",
    "dns_retr_no", "dns_retr_time", "dns_servers_no", "dns_try_ipv6", "dns_try_naptr",
    "dns_use_search_list", "dst_blacklist", "enable_asserts", "event_pkg_threshold", "event_shm_threshold",
    "exec_dns_threshold", "exec_msg_threshold", "execdnsthreshold", "execmsgthreshold", "gid", "group",
    "listen", "log_event_enabled", "log_event_level_filter", "log_facility", "log_json_buf_size",
    "log_level", "log_msg_buf_size", "log_name", "log_prefix", "log_stderror", "log_stdout",
    "max_while_loops", "maxbuffer", "mcast_loopback", "mcast_ttl", "mem", "mem_dump", "mem_log",
    "mem_warming", "mem_warming_enabled", "mem_warming_pattern_file", "mem_warming_percentage", "memdump",
    "memlog", "mhomed", "mpath", "open_files_limit", "poll_method", "pv_print_buf_size",
    "query_buffer_size", "query_flush_time", "restart_persistency_cache_file", "restart_persistency_size",
    "rev_dns", "server_header", "server_signature", "shm_hash_split_percentage", "shm_memlog_size",
    "shm_secondary_hash_size", "sip_warning", "socket", "stderror_enabled", "stderror_level_filter",
    "stderror_log_format", "syslog_enabled", "syslog_facility", "syslog_level_filter", "syslog_log_format",
    "syslog_name", "tcp_accept_aliases", "tcp_connect_timeout", "tcp_connection_lifetime", "tcp_keepalive",
    "tcp_keepcount", "tcp_keepidle", "tcp_keepinterval", "tcp_max_connections", "tcp_max_msg_time",
    "tcp_no_new_conn_bflag", "tcp_no_new_conn_rplflag", "tcp_parallel_read_on_workers",
    "tcp_socket_backlog", "tcp_threshold", "tcp_workers", "tcpthreshold", "timer_workers", "tos",
    "udp_workers", "uid", "user", "user_agent_header", "wdir", "workdir", "xlog_buf_size",
    "xlog_force_color", "xlog_level", "xlog_print_level",
})

# OpenSIPS's other names of one parameter, stored under the name the rest of routescript reads.
_SAME_AS = {"workdir": "wdir", "execdnsthreshold": "exec_dns_threshold"}

def canonical_name(name: str) -> str:
    """The name a core parameter is stored under (`workdir` is `wdir`)."""
    return _SAME_AS.get(name, name)


# What a 2.x script meant by a parameter 3.x removed, for the error message.
_REMOVED_PARAM_HINTS = {
    "port": "the port is part of each socket: socket = udp:127.0.0.1:5060",
    "disable_tcp": "TCP is on when a tcp socket is listed (socket = tcp:...)",
    "tcp_children": "OpenSIPS 2.x's name: tcp_workers",
    "tcp_listen_backlog": "OpenSIPS 2.x's name of tcp_socket_backlog",
    "xlog_default_level": "OpenSIPS 2.x's name: xlog_print_level",
    "pi_framework": "an OpenSIPS 4.x parameter of the pi_http framework; routescript follows 3.4 and has "
                    "no pi_http",
    "tcp_threads": "an OpenSIPS 4.x parameter; routescript follows 3.4 (tcp_workers)",
    "worker_reactor_timeout": "an OpenSIPS 4.x parameter; routescript follows 3.4",
}

# Worker counts: at least 1 each (1 = today's single process).
_WORKER_COUNTS = ("children", "udp_workers", "tcp_workers", "timer_workers")
_AT_LEAST_ONE = frozenset({"mi_max_walks", *_WORKER_COUNTS, "worker_restart_backoff", "shutdown_timeout",
                           "tcp_connect_timeout",
                           "max_while_loops"})
# The advertised address is built for Record-Route (rr) and myself; the Via of the requests we send is not
# rewritten yet: said at load, not silently (docs/core-parameters.md).
ADVERTISED_PARTLY = ("the advertised address goes in Record-Route and counts as myself; the Via of "
                     "requests we send still carries the socket's own address (not built yet)")
@dataclass(slots=True)
class CoreConfig:
    """The typed global parameters of one configuration."""

    sockets: list[ListenSpec] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # typed by kind (KNOWN_GLOBALS): Any by design
    aliases: list[str] = field(default_factory=list)
    positions: dict[str, Pos] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # informational lines logged at start

    def get(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        spec = KNOWN_GLOBALS.get(name)
        return spec[1] if spec else None

    @property
    def tcp_trusted_sources(self) -> NetworkList:
        value = self.values.get("tcp_trusted_sources")
        return value if isinstance(value, NetworkList) else NetworkList()

    @property
    def log_level(self) -> int:
        return int(self.values.get("log_level", self.values.get("debug", L_NOTICE)))

    @property
    def xlog_level(self) -> int:
        """Threshold of xlog() lines. Choice: when the script does not set xlog_level it follows
        log_level, so `log_level = 3` shows xlog("L_INFO", ...) lines as a script author expects."""
        if "xlog_level" in self.values:
            return int(self.values["xlog_level"])
        return self.log_level

    @property
    def stderror_enabled(self) -> bool:
        return bool(self.values.get("stderror_enabled", self.values.get("log_stderror", True)))

    @property
    def syslog_enabled(self) -> bool:
        """syslog_enabled when set; else OpenSIPS 2.x's meaning of `log_stderror = no`: to syslog."""
        if "syslog_enabled" in self.values:
            return bool(self.values["syslog_enabled"])
        return "log_stderror" in self.values and not self.values["log_stderror"]

    @property
    def syslog_facility(self) -> str:
        """syslog_facility, or its other name log_facility (LOG_DAEMON)."""
        return str(self.values.get("syslog_facility", self.values.get("log_facility", "LOG_DAEMON")))

    @property
    def syslog_name(self) -> str:
        """The syslog ident: syslog_name, or its other name log_name (routescript)."""
        return str(self.values.get("syslog_name", self.values.get("log_name", "routescript")))

    @property
    def server_header(self) -> str:
        """The Server header value core replies carry, or '' (OpenSIPS: `server_header = "Server: x"`)."""
        return self._header_value("server_header", "server:")

    @property
    def user_agent_header(self) -> str:
        """The User-Agent value of requests we originate, or '' (`user_agent_header = "User-Agent: x"`)."""
        return self._header_value("user_agent_header", "user-agent:")

    def _header_value(self, param: str, prefix: str) -> str:
        """OpenSIPS takes these parameters as whole header lines: keep only the value."""
        v = str(self.get(param) or "")
        if v.lower().startswith(prefix):
            v = v[len(prefix):].strip()
        return v

    @property
    def tcp_connect_timeout(self) -> float:
        """Seconds an outgoing TCP/TLS connect may take: tcp_connect_timeout (ms), 5 s when not set."""
        ms = self.get("tcp_connect_timeout")
        return 5.0 if ms is None else int(ms) / 1000.0

    @property
    def mpath(self) -> str:
        return str(self.get("mpath") or "")

    def run_as(self) -> RunAs | None:
        """Whom to run as after binding (`user`/`uid`, `group`/`gid`), None to stay as started.
        PrivilegeError for an unknown name (apply_globals checked the script's own values)."""
        user = str(self.values.get("user") or self.values.get("uid") or "")
        group = str(self.values.get("group") or self.values.get("gid") or "")
        return run_as(user, group)

    def listen_specs(self) -> list[ListenSpec]:
        """The sockets to open: the socket= lines, or DEFAULT_SOCKET when there are none."""
        return list(self.sockets) or [parse_socket(DEFAULT_SOCKET)]

    def dns_settings(self) -> DnsSettings:
        """The next-hop resolver's settings (routescript/resolve, docs/dns.md):
        DnsResolver(cfg.dns_settings())."""
        from routescript.resolve.lookup import LookupSettings
        from routescript.resolve.resolver import DnsSettings
        from routescript.resolve.rfc3263 import Policy

        lookup = LookupSettings(
            retry_time=self.get("dns_retr_time"), retries=self.get("dns_retr_no"),
            servers_no=self.get("dns_servers_no"), use_search_list=bool(self.get("dns_use_search_list")),
            nameservers=parse_nameservers(str(self.get("dns_nameservers") or "")),
            slow_query_us=int(self.get("exec_dns_threshold") or self.get("execdnsthreshold") or 0))
        return DnsSettings(
            policy=Policy(try_naptr=bool(self.get("dns_try_naptr")), try_ipv6=bool(self.get("dns_try_ipv6"))),
            failover=not self.get("disable_dns_failover"), lookup=lookup,
            hosts_file=str(self.get("dns_hosts_file") or "/etc/hosts"))

    def compile_options(self) -> dict[str, Any]:
        """The script compiler's options (routescript.script.compile_script) from the core parameters."""
        return {"max_while_loops": int(self.get("max_while_loops")),
                "enable_asserts": bool(self.get("enable_asserts")),
                "abort_on_assert": bool(self.get("abort_on_assert"))}

    def worker_plan(self) -> WorkerPlan:
        """How many worker processes and which sockets each reads (routescript/workers/plan.py)."""
        from routescript.workers.plan import WorkerPlan

        return WorkerPlan.of(self)


def unknown_globals(items: Sequence[tuple[str, object, Pos | None]]) -> list[tuple[str, Pos | None]]:
    """The errors (message, pos) for the names neither routescript nor OpenSIPS 3.4 knows (OpenSIPS refuses
    such a script: `port = 5060` is a 2.x parameter)."""
    import difflib

    errors: list[tuple[str, Pos | None]] = []
    for name, _value, pos in items:
        if name in KNOWN_GLOBALS or name in OPENSIPS_CORE_PARAMS:
            continue
        hint = _REMOVED_PARAM_HINTS.get(name)
        if hint is None:
            close = difflib.get_close_matches(name, sorted(KNOWN_GLOBALS.keys() | OPENSIPS_CORE_PARAMS), n=1)
            hint = f"did you mean {close[0]}?" if close else ""
        errors.append((f"unknown core parameter '{name}'" + (f" ({hint})" if hint else ""), pos))
    return errors


def apply_globals(items: Sequence[tuple[str, object, Pos | None]], errors: list[ConfigError] | None = None,
                  ) -> tuple[CoreConfig, list[tuple[str, Pos | None]]]:
    """Type `name = value` assignments. Returns (config, warnings as (message, pos)). Names nobody knows
    are skipped here (they are unknown_globals' errors). A bad value of a known parameter, or one
    param_policy.REFUSED refuses, is a ConfigError: raised at once, or - with an `errors` list - added to
    it and the parameter skipped, so that a checker reports them all. An ACCEPTED parameter leaves a
    start-up note."""
    cfg = CoreConfig()
    warnings: list[tuple[str, Pos | None]] = []
    for name, value, pos in items:
        try:
            _apply_one(cfg, name, value, pos, warnings)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
    _apply_debug_mode(cfg)
    for check in (check_identity, check_chroot, check_wdir):
        try:
            check(cfg)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return cfg, warnings


def _apply_one(cfg: CoreConfig, name: str, value: object, pos: Pos | None,
               warnings: list[tuple[str, Pos | None]]) -> None:
    spec = KNOWN_GLOBALS.get(name)
    if spec is None:
        return
    kind, _default, _repeatable = spec
    if kind == "socket":
        sock = socket_of(value, pos)
        cfg.sockets.append(sock)
        if sock.advertised:
            warnings.append((f"socket {sock.name} as {sock.advertised}: {ADVERTISED_PARTLY}", pos))
        return
    try:
        # $env(NAME) in db_default_url and the like (environ.py)
        given = expand_env(value) if kind == "str" else value
    except ValueError as exc:
        raise ConfigError(f"core parameter '{name}': {exc}", pos) from None
    try:
        typed: Any = KIND_PARSERS[kind](given)
    except ValueError as exc:
        raise ConfigError(f"core parameter '{name}' {exc}", pos) from None
    if name in _AT_LEAST_ONE and typed < 1:
        raise ConfigError(f"core parameter '{name}' must be at least 1, got {typed}", pos)
    if (why := refusal(name, typed)) is not None:
        raise ConfigError(why, pos)
    if (note := accepted_note(name)) is not None and note not in cfg.notes:
        cfg.notes.append(note)
    if name in ("advertised_address", "advertised_port") and typed:
        warnings.append((f"core parameter '{name}': {ADVERTISED_PARTLY}", pos))
    check_worker_param(cfg, name, typed, pos, warnings)
    check_dns_param(name, typed, pos)
    check_log_param(name, typed, pos)
    name = _SAME_AS.get(name, name)
    if name == "alias":
        cfg.aliases.append(typed)
    else:
        cfg.values[name] = typed
    if pos:
        cfg.positions[name] = pos


def _apply_debug_mode(cfg: CoreConfig) -> None:
    """debug_mode = yes: log_level L_DBG, to standard error and not to syslog, whatever the script
    says elsewhere (OpenSIPS cfg.y and main.c). A --log-level flag still overrides it (overrides.py)."""
    if not cfg.values.get("debug_mode"):
        return
    for name in ("debug", "log_stderror"):
        cfg.values.pop(name, None)
    cfg.values.update(log_level=L_DBG, stderror_enabled=True, syslog_enabled=False)
