"""Branches (OpenSIPS 3.4 core_cmds.c / dset.c / serialize.c): append_branch, remove_branch,
serialize_branches, next_branches and $branch(field)[i].
Branch 0 is the request itself (its Request-URI, ctx.dst_uri, ctx.bflags); ctx.branches holds the
appended ones, which tm's t_relay forks to."""

from __future__ import annotations

import json
import re
from typing import Any

from routescript.script.context import FAILURE_ROUTE, REQUEST_ROUTE, Branch, MsgContext
from routescript.script.flags import FlagNames
from routescript.script.pv_message import set_ruri
from routescript.script.registry import ArgSpec, FunctionSpec, PVarSpec, Registry, function
from routescript.sip import ParseError, SIPRequest, parse_uri

# OpenSIPS MAX_BRANCHES default (the `max_branches` of 3.x): branches one request may fork to, the
# request URI included.
MAX_BRANCHES = 12


def _q_fixup(value: Any) -> float | None:
    """A q-value (RFC 3261 20.10: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ))."""
    if value is None:
        return None
    text = str(value).strip()
    if not re.fullmatch(r"0(\.\d{0,3})?|1(\.0{0,3})?", text):
        raise ValueError(f"bad q value {text!r} (0 to 1, three decimals at most)")
    return float(text)


def append_branch(ctx: MsgContext, uri: Any = None, q: Any = None) -> int:
    """append_branch([uri[, q]]): one more destination for t_relay to fork to.

    Without a URI the current request (its URI, $du, branch flags, forced socket) becomes the new
    branch and those are reset on the request, as OpenSIPS does; with one, the new branch takes the
    URI and the request's $du, branch flags and forced socket."""
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        raise ValueError("append_branch: there is no request")
    branches = ctx.branches
    if branches is not None and len(branches) + 1 >= MAX_BRANCHES:
        raise ValueError(f"append_branch: {MAX_BRANCHES} branches already (the most a request forks to)")
    if q is not None and not isinstance(q, float):
        q = _q_fixup(q)
    if uri is None:
        branch = Branch(msg.ruri, ctx.dst_uri, None, q, ctx.bflags, ctx.send_socket)
        ctx.dst_uri, ctx.bflags, ctx.send_socket = None, 0, None
    else:
        text = str(uri).strip()
        try:
            parse_uri(text)
        except ParseError:
            raise ValueError(f"append_branch: not a valid URI: {text!r}") from None
        branch = Branch(text, ctx.dst_uri, None, q, ctx.bflags, ctx.send_socket)
    if branches is None:
        ctx.branches = [branch]
    else:
        branches.append(branch)
    return 1


def remove_branch(ctx: MsgContext, index: int) -> int:
    """Remove appended branch `index` (0: the first append_branch() one)."""
    branches = ctx.branches
    if branches is None or not 0 <= index < len(branches):
        return -1
    del branches[index]
    return 1


_BRANCH_FIELDS = ("uri", "duri", "q", "path", "flags", "socket")


def _branch_field(names: FlagNames, branch: Branch, field: str) -> Any:
    if field == "uri":
        return branch.uri
    if field == "duri":
        return branch.dst_uri
    if field == "q":
        return None if branch.q is None else f"{branch.q:g}"   # "0.5", "1" (OpenSIPS q2str)
    if field == "path":
        return branch.path
    if field == "flags":
        return names.names(branch.flags)
    sock = branch.socket
    return None if sock is None else str(sock)


def _check_branch_field(key: str) -> None:
    if key not in _BRANCH_FIELDS:
        raise ValueError(f"$branch({key}): unknown field (one of {', '.join(_BRANCH_FIELDS)})")


# --- serial forking by q: serialize_branches / next_branches -----------------------------------------------
#
# serialize_branches() stores every destination (the Request-URI branch and the appended ones) in the
# $avp(serial_branch) values, highest q first, and clears the appended branches; each next_branches()
# takes the destinations of the next q class back: the first as the Request-URI ($du, branch flags,
# forced socket with it), the others as branches. The AVP survives into failure_route as AVPs do, so a
# failure route calls next_branches() and t_relay() for the next class (OpenSIPS's serial forking).
# Each value is a JSON list [uri, dst_uri, path, q, flags, socket, last_of_class] (OpenSIPS packs a
# binary struct there: the value is ours to choose; the socket by name, found again among ours).

SERIAL_AVP = "serial_branch"


def _serial_value(b: Branch, last_of_class: bool) -> str:
    sock = None if b.socket is None else str(b.socket)
    return json.dumps([b.uri, b.dst_uri, b.path, b.q, b.flags, sock, last_of_class])


def serialize_branches(ctx: MsgContext, clear: int, keep_order: int | None = None) -> int:
    """serialize_branches(clear[, keep_order]): nothing to do (no appended branch, or every q equal
    and not keep_order) is true, as OpenSIPS."""
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        raise ValueError("serialize_branches: there is no request")
    branches = ctx.branches or []
    if not branches:
        return 1
    first = Branch(msg.ruri, ctx.dst_uri, None, None, ctx.bflags, ctx.send_socket)
    if not keep_order and all(b.q == first.q for b in branches):
        return 1
    everyone = [first, *branches]
    if not keep_order:
        # highest q first, equal q in their order; an unspecified q ranks below 0 (OpenSIPS Q_UNSPECIFIED)
        everyone.sort(key=lambda b: -1.0 if b.q is None else b.q, reverse=True)
    values = []
    for i, b in enumerate(everyone):
        nxt = everyone[i + 1] if i + 1 < len(everyone) else None
        last = bool(keep_order) or nxt is None or (nxt.q if nxt.q is not None else -1.0) < (
            b.q if b.q is not None else -1.0)
        values.append(_serial_value(b, last))
    if clear:
        ctx.avps.pop(SERIAL_AVP, None)
    stored = ctx.avps.setdefault(SERIAL_AVP, [])
    stored[0:0] = values          # read newest first, as $avp values are
    ctx.branches = None
    return 1


def next_branches(ctx: MsgContext) -> int:
    """The next q class back from $avp(serial_branch): 1 when more classes remain, 2 when that was the
    last, -1 when there was none left."""
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        raise ValueError("next_branches: there is no request")
    stored = ctx.avps.get(SERIAL_AVP)
    if not stored:
        return -1
    taken = 0
    while taken < len(stored):
        uri, dst_uri, path, q, flags, sock, last = json.loads(stored[taken])
        socket = _our_socket(ctx, sock)
        if taken == 0:
            set_ruri(ctx, None, None, uri)
            ctx.dst_uri, ctx.bflags, ctx.send_socket = dst_uri, flags, socket
        else:
            branch = Branch(uri, dst_uri, path, q, flags, socket)
            if ctx.branches is None:
                ctx.branches = [branch]
            else:
                ctx.branches.append(branch)
        taken += 1
        if last:
            break
    del stored[:taken]
    if not stored:
        ctx.avps.pop(SERIAL_AVP, None)
        return 2
    return 1


def _our_socket(ctx: MsgContext, name: str | None) -> Any:
    if name is None or ctx.server is None:
        return None
    return next((s for s in ctx.server.sockets if str(s) == name), None)


def branch_functions() -> list[FunctionSpec]:
    return [
        function("append_branch", append_branch, ArgSpec("str", optional=True, name="uri"),
                 ArgSpec("str", optional=True, name="q", fixup=_q_fixup)),
        function("remove_branch", remove_branch, ArgSpec("int", name="index")),
        function("serialize_branches", serialize_branches, ArgSpec("int", name="clear"),
                 ArgSpec("int", optional=True, name="keep_order")),
        # OpenSIPS refuses it at run time elsewhere; here the route kind is checked at load
        function("next_branches", next_branches, routes=(REQUEST_ROUTE, FAILURE_ROUTE)),
    ]


def branch_pvars(registry: Registry) -> list[PVarSpec]:
    branch_flags = registry.branch_flags

    def get_branch(ctx: MsgContext, key: Any, index: Any) -> Any:
        """$branch(field)[i]: the i-th appended branch (0: the first; the request URI is not one)."""
        branches = ctx.branches or []
        field = key or "uri"
        if index == "*":
            values = [_branch_field(branch_flags, b, field) for b in branches]
            return ", ".join(str(v) for v in values if v is not None) or None
        i = 0 if index is None else int(index)
        if not -len(branches) <= i < len(branches):
            return None
        return _branch_field(branch_flags, branches[i], field)

    return [PVarSpec("branch", get_branch, key="optional", check_key=_check_branch_field)]
