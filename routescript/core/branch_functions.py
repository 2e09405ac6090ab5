"""Branches (OpenSIPS 3.4 core_cmds.c / dset.c): append_branch, remove_branch and $branch(field)[i].
Branch 0 is the request itself (its Request-URI, ctx.dst_uri, ctx.bflags); ctx.branches holds the
appended ones, which tm's t_relay forks to."""

from __future__ import annotations

import re
from typing import Any

from routescript.script.context import Branch, MsgContext
from routescript.script.flags import FlagNames
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


def branch_functions() -> list[FunctionSpec]:
    return [
        function("append_branch", append_branch, ArgSpec("str", optional=True, name="uri"),
                 ArgSpec("str", optional=True, name="q", fixup=_q_fixup)),
        function("remove_branch", remove_branch, ArgSpec("int", name="index")),
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
