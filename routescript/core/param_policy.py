"""What routescript does with the OpenSIPS core parameters it does not act on (issue 22).

Every core parameter OpenSIPS 3.4 accepts is in one of three states (docs/core-parameters.md lists them
all, with type, default and what they do here):

- built: it does here what it does in OpenSIPS (the rest of routescript/core reads it);
- ACCEPTED: any value is taken and has no effect, because nothing a client or an operator could observe
  would differ (the sizes of OpenSIPS's C memory allocator in a Python process) - the reason is logged
  once at start, never silently;
- REFUSED: the feature is not built; the value that matches what routescript does is accepted, any other
  is a load-time error at the line, naming the parameter and why (never accepted and dropped).
"""

from __future__ import annotations

from typing import Any, Final


class _Unset:
    """REFUSED's "no value at all is accepted": the parameter must not be written."""

    def __repr__(self) -> str:
        return "unset"


UNSET: Final = _Unset()

_ALLOCATOR = ("OpenSIPS's own shared/private memory allocator; routescript is a Python process whose "
              "memory the interpreter manages (bound it from outside: systemd's MemoryMax=)")
_BUFFER = "a fixed C buffer in OpenSIPS; routescript's strings grow as needed, so nothing is cut short"

# name -> why it has no effect here
ACCEPTED: dict[str, str] = {
    "mem": _ALLOCATOR,
    "shm_hash_split_percentage": _ALLOCATOR,
    "shm_secondary_hash_size": _ALLOCATOR,
    "shm_memlog_size": _ALLOCATOR,
    "mem_warming": _ALLOCATOR,
    "mem_warming_enabled": _ALLOCATOR,
    "mem_warming_pattern_file": _ALLOCATOR,
    "mem_warming_percentage": _ALLOCATOR,
    "mem_dump": _ALLOCATOR,
    "memdump": _ALLOCATOR,
    "mem_log": _ALLOCATOR,
    "memlog": _ALLOCATOR,
    "pv_print_buf_size": _BUFFER,
    "log_msg_buf_size": _BUFFER,
    "log_json_buf_size": _BUFFER,
    "xlog_buf_size": _BUFFER,
    "poll_method": "asyncio picks the system's best poller (epoll on Linux) by itself",
    "mpath": ("modules are Python packages found by name (loadmodule \"presence.so\" loads "
              "routescript.modules.presence), not shared objects on a path"),
    "xlog_force_color": ("colour codes: routescript has no $C pseudo-variable (a script using it is "
                         "refused), so there is nothing to colour"),
    "tcp_parallel_read_on_workers": ("how OpenSIPS hands TCP reads to its workers; here a connection is read "
                                     "by the process that accepted it (docs/workers.md)"),
    "db_max_async_connections": ("OpenSIPS's async DB connections per worker; routescript's database "
                                 "back ends keep their own pool (docs/modules/db_*.md)"),
    "query_buffer_size": ("OpenSIPS's delayed-insert buffer (acc); routescript group-commits its "
                          "writes (DESIGN.md) and has no delayed inserts"),
    "query_flush_time": ("OpenSIPS's delayed-insert buffer (acc); routescript group-commits its "
                         "writes (DESIGN.md) and has no delayed inserts"),
}

# name -> (the one value accepted: what routescript does, or UNSET; why any other is refused)
REFUSED: dict[str, tuple[Any, str]] = {
    "dns": (False, ("looking the Via host of every request up to decide on received= is not supported: "
                    "it would put a DNS lookup on the message path; received= is added whenever the Via "
                    "host is not the source address (RFC 3261 18.2.1), as with dns = no")),
    "rev_dns": (False, ("a reverse lookup of every request's source address is not supported: it would "
                        "put a DNS lookup on the message path")),
    "disable_dns_blacklist": (True, ("is not supported: routescript has no DNS blacklist (failed "
                                     "destinations are not remembered between transactions)")),
    "dst_blacklist": (UNSET, ("destination blacklists are not built; filter destinations in the script "
                              "(if ($du =~ ...) drop;)")),
    "auto_aliases": (False, ("adding the reverse-DNS names of the listening addresses is not done (a DNS "
                             "lookup at start); list the names with alias=")),
    "mhomed": (False, ("choosing the outgoing socket from the routing table is not built: a request goes "
                       "out of the socket it came in on, or the first socket of its protocol (or the one "
                       "force_send_socket() names)")),
    "tos": (UNSET, ("the IP TOS of the sockets is not set (OpenSIPS sets IPTOS_LOWDELAY): the system's "
                    "default applies; mark traffic with the firewall (iptables DSCP) instead")),
    "sip_warning": (False, ("the debugging Warning header (392, \"Noisy feedback tells\") is not built; "
                            "add a header with append_to_reply() if needed")),
    "tcp_no_new_conn_bflag": ("", ("branches that must not open a TCP connection are not built: every "
                                   "branch may connect")),
    "tcp_no_new_conn_rplflag": ("", "replies that must not open a TCP connection are not built"),
    "tcp_accept_aliases": (False, ("the Via ;alias parameter (RFC 5923 connection reuse) is not built; "
                                   "replies go back over the connection the request came on")),
    "tcp_socket_backlog": (UNSET, "the listen backlog is asyncio's (100), not set per script"),
    "tcp_threshold": (0, "the slow TCP operation warning is not built"),
    "tcpthreshold": (0, "the slow TCP operation warning is not built"),
    "exec_msg_threshold": (0, ("the slow script run warning is not built; the queue_delay_limit "
                               "refusal and the event-loop lag metric watch slow processing here")),
    "execmsgthreshold": (0, ("the slow script run warning is not built; the queue_delay_limit refusal "
                             "and the event-loop lag metric watch slow processing here")),
    "event_pkg_threshold": (0, ("the E_CORE_PKG_THRESHOLD event is not raised (there is no OpenSIPS "
                                "private memory pool here)")),
    "event_shm_threshold": (0, ("the E_CORE_SHM_THRESHOLD event is not raised (there is no OpenSIPS "
                                "shared memory pool here)")),
    "log_event_enabled": (False, "the E_CORE_LOG event is not raised"),
    "log_event_level_filter": (UNSET, "the E_CORE_LOG event is not raised"),
    "log_prefix": ("", ("a prefix on every log line is not built; the text format is fixed "
                        "(docs/operations.md, \"Logs\"), the json format carries fields")),
    "log_stdout": (False, ("logging to standard output is not built: logs go to standard error or "
                           "syslog")),
    "mcast_loopback": (False, "multicast sockets are not supported"),
    "mcast_ttl": (UNSET, "multicast sockets are not supported"),
    "auto_scaling_profile": (UNSET, ("auto-scaling of the worker processes is not built: the number is "
                                     "fixed by udp_workers/tcp_workers")),
    "auto_scaling_cycle": (UNSET, "auto-scaling of the worker processes is not built"),
    "restart_persistency_cache_file": ("", ("keeping OpenSIPS's shared memory across restarts is not "
                                            "built; state that survives a restart is in the database")),
    "restart_persistency_size": ("", ("keeping OpenSIPS's shared memory across restarts is not built; "
                                      "state that survives a restart is in the database")),
    "db_version_table": ("version", "the version table is always called `version` (OpenSIPS's name)"),
    # OpenSIPS 2.x: fork = yes daemonized (3.x does unless -F); routescript always runs in the foreground
    "fork": (False, ("routescript does not daemonize: it runs in the foreground under systemd (contrib/) "
                     "or another supervisor")),
    "dont_fork": (True, ("routescript does not daemonize: it runs in the foreground under systemd "
                         "(contrib/) or another supervisor")),
}


def refusal(name: str, value: Any) -> str | None:
    """Why `name = value` is refused, or None when it is accepted (or not a REFUSED parameter)."""
    entry = REFUSED.get(name)
    if entry is None:
        return None
    allowed, why = entry
    if allowed is not UNSET and value == allowed:
        return None
    shown = ("yes" if value else "no") if isinstance(value, bool) else repr(value)
    return f"core parameter {name} = {shown}: {why}"


def accepted_note(name: str) -> str | None:
    """The start-up note of an ACCEPTED parameter (None for any other)."""
    why = ACCEPTED.get(name)
    return None if why is None else f"core parameter '{name}' accepted without effect: {why}"
