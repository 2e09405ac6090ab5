"""The per-message state a compiled route runs with (OpenSIPS's `struct sip_msg` plus script state).

One `MsgContext` is made for each message (or timer tick, or event) a route runs for. It is the
first argument of every script function, pseudo-variable getter/setter and compiled route.

Choice where OpenSIPS differs: OpenSIPS keeps `$var` values per worker process across messages; we
run many messages concurrently on one event loop, so `$var` lives in the context and starts empty
for every message. Scripts that initialise their variables (as the OpenSIPS docs advise) behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routescript.sip import ParseError, SIPRequest, SIPResponse, Source

# Route kinds, named as OpenSIPS names them.
REQUEST_ROUTE = "request"
ONREPLY_ROUTE = "onreply"
FAILURE_ROUTE = "failure"
BRANCH_ROUTE = "branch"
LOCAL_ROUTE = "local"
STARTUP_ROUTE = "startup"
TIMER_ROUTE = "timer"
EVENT_ROUTE = "event"
ERROR_ROUTE = "error"
ALL_ROUTES = frozenset(
    {REQUEST_ROUTE, ONREPLY_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE, LOCAL_ROUTE, STARTUP_ROUTE, TIMER_ROUTE,
     EVENT_ROUTE, ERROR_ROUTE}
)


@dataclass(slots=True, eq=False)
class MsgContext:
    """State of one route run.

    msg:        the SIP message (routescript.sip SIPRequest/SIPResponse), None for startup/timer/event routes.
    source:     where it came from (routescript.sip Source), None when not from the network.
    server:     the running server (routescript.core.host.ModuleHost); modules reach transports,
                transactions and other modules through it. Typed Any here: script sits below core and
                never imports it; module code reads it through `self.server`, which is typed.
    route_type: one of the *_ROUTE names above.
    """

    msg: SIPRequest | SIPResponse | None = None
    source: Source | None = None
    server: Any = None
    route_type: str = REQUEST_ROUTE
    vars: dict[str, Any] = field(default_factory=dict)          # $var(name)
    avps: dict[str, list[Any]] = field(default_factory=dict)    # $avp(name): newest value first
    params: dict[str, Any] = field(default_factory=dict)        # $param(name) in event_route
    retcode: int = 0                                            # $retcode / $rc / $?
    # the server transaction once t_newtran/t_check_trans found or made one (Any: script never imports
    # the transaction layer)
    transaction: Any = None
    replied: bool = False          # a final reply was sent for this request (sl or tm)
    dst_uri: str | None = None     # $du
    error: ParseError | None = None  # the routescript.sip ParseError for error_route ($err.*)
    reply_code: int | None = None  # $T_reply_code in failure/onreply routes
    # What went wrong while the script ran, for the core to act on after the route returns: the
    # exception a function call, pseudo-variable or statement raised, and the script position (Pos)
    # where it happened. The script itself goes on (a failing function is false, as in OpenSIPS); the
    # core answers a routescript.sip ParseError with its status (or runs error_route) and our own bug
    # with 500 when the script sent no reply. See runtime.note_failure for which one is kept.
    failure: BaseException | None = None
    failure_pos: Any = None
    # Header lines for every reply the core builds to this request (sipmsgops append_to_reply):
    # [(name, value)], None when there are none.
    reply_headers: list[tuple[str, str]] | None = None
    # per-message scratch space for modules, keyed by module name
    extra: dict[str, Any] = field(default_factory=dict)
    # The proxy side (None/0 until a script uses them, so a message that never relays pays nothing):
    flags: int = 0                        # message flags: setflag/resetflag/isflagset
    bflags: int = 0                       # branch flags of branch 0 (the request URI): setbflag ...
    branches: list[Branch] | None = None  # append_branch(): the extra branches t_relay forks to
    send_socket: Any = None               # force_send_socket(): the Socket relayed requests leave by
    # called as hook(outgoing request, sending Socket) once the socket is known, before the request is
    # built into bytes: rr's Record-Route (one or two entries, by socket) is added here
    send_hooks: list[Callable[[SIPRequest, Any], None]] | None = None


@dataclass(slots=True, eq=False)
class Branch:
    """One extra destination of a request (OpenSIPS's branch): append_branch(), lookup() with several
    contacts. Branch 0 is the request itself (ctx.msg's request URI, ctx.dst_uri, ctx.bflags)."""

    uri: str
    dst_uri: str | None = None
    path: str | None = None
    q: float | None = None
    flags: int = 0          # branch flags
    socket: Any = None      # the Socket it leaves by, None: chosen by destination
