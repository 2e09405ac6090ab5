"""Message flags and branch flags (OpenSIPS 3.4 core_cmds.c / flags.c / dset.c): setflag, resetflag,
isflagset, setbflag, resetbflag, isbflagset, and $mf / $bf. Which bit a flag is: routescript/script/flags.py.
Branch 0 is the request URI (ctx.bflags); branch i >= 1 the i-th append_branch() one (ctx.branches)."""

from __future__ import annotations

import dataclasses
from typing import Any

from routescript.script.context import MsgContext
from routescript.script.flags import FlagNames
from routescript.script.registry import ArgSpec, FunctionSpec, PVarSpec, Registry, function


def _flag_fixup(names: FlagNames) -> Any:
    return names.mask


def setflag(ctx: MsgContext, mask: int) -> int:
    ctx.flags |= mask
    return 1


def resetflag(ctx: MsgContext, mask: int) -> int:
    ctx.flags &= ~mask
    return 1


def isflagset(ctx: MsgContext, mask: int) -> int:
    return 1 if ctx.flags & mask else -1


class _BranchFlagArgs:
    """setbflag & co. take (flag[, branch]) in OpenSIPS 3 and ([branch,] flag) in 2.x. The 2.x form is
    recognised at load time when its second argument is a flag name (setbflag(1, NAT)); two numbers
    read as the 3.x order (flag, branch), as OpenSIPS 3.4 reads them."""

    def __init__(self, names: FlagNames) -> None:
        self.names = names

    def first(self, value: Any) -> tuple[int, str]:
        """(mask, the text written): a 2.x branch index is the text."""
        return self.names.mask(value), str(value).strip()

    def second(self, value: Any) -> Any:
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            return int(text)        # the 3.x branch index
        return _Flag2x(self.names.mask(text))


@dataclasses.dataclass(frozen=True, slots=True)
class _Flag2x:
    mask: int


def _branch_flag_target(ctx: MsgContext, first: tuple[int, str], second: Any) -> tuple[int, int]:
    """(mask, branch index) from the two arguments as _BranchFlagArgs fixed them."""
    mask, text = first
    if isinstance(second, _Flag2x):       # 2.x: ([branch,] flag)
        if not text.isdigit():
            raise ValueError(f"two flags given ({text!r} and another): the 2.x order is (branch, flag), "
                             "the 3.x order (flag, branch)")
        return second.mask, int(text)
    return mask, 0 if second is None else int(second)


def _bflags_get(ctx: MsgContext, idx: int) -> int | None:
    if idx == 0:
        return ctx.bflags
    branches = ctx.branches
    if branches is None or not 0 < idx <= len(branches):
        return None
    return branches[idx - 1].flags


def _bflags_set(ctx: MsgContext, idx: int, value: int) -> None:
    if idx == 0:
        ctx.bflags = value
    else:
        assert ctx.branches is not None
        ctx.branches[idx - 1].flags = value


def setbflag(ctx: MsgContext, first: tuple[int, str], second: Any = None) -> int:
    mask, idx = _branch_flag_target(ctx, first, second)
    flags = _bflags_get(ctx, idx)
    if flags is None:
        raise ValueError(f"there is no branch {idx}")
    _bflags_set(ctx, idx, flags | mask)
    return 1


def resetbflag(ctx: MsgContext, first: tuple[int, str], second: Any = None) -> int:
    mask, idx = _branch_flag_target(ctx, first, second)
    flags = _bflags_get(ctx, idx)
    if flags is None:
        raise ValueError(f"there is no branch {idx}")
    _bflags_set(ctx, idx, flags & ~mask)
    return 1


def isbflagset(ctx: MsgContext, first: tuple[int, str], second: Any = None) -> int:
    mask, idx = _branch_flag_target(ctx, first, second)
    flags = _bflags_get(ctx, idx)
    return 1 if flags is not None and flags & mask else -1


def flag_functions(registry: Registry) -> list[FunctionSpec]:
    """The flag functions, their flag arguments given bits from this configuration's flag names."""
    mflag = _flag_fixup(registry.msg_flags)
    bargs = _BranchFlagArgs(registry.branch_flags)

    def flag_arg() -> ArgSpec:
        return ArgSpec("str", name="flag", fixup=mflag, static=True)

    def bflag_args() -> tuple[ArgSpec, ArgSpec]:
        return (ArgSpec("str", name="flag", fixup=bargs.first, static=True),
                ArgSpec("str", optional=True, name="branch_idx", fixup=bargs.second, static=True))

    return [
        function("setflag", setflag, flag_arg()),
        function("resetflag", resetflag, flag_arg()),
        function("isflagset", isflagset, flag_arg()),
        function("setbflag", setbflag, *bflag_args()),
        function("setbranchflag", setbflag, *bflag_args()),     # the 2.x spelling
        function("resetbflag", resetbflag, *bflag_args()),
        function("isbflagset", isbflagset, *bflag_args()),
    ]


def flag_pvars(registry: Registry) -> list[PVarSpec]:
    """$mf / $bf: the set message flags / branch-0 flags by name, space separated (read-only)."""
    msg_flags, branch_flags = registry.msg_flags, registry.branch_flags

    def get_mf(ctx: MsgContext, key: Any, index: Any) -> str:
        return msg_flags.names(ctx.flags)

    def get_bf(ctx: MsgContext, key: Any, index: Any) -> str:
        return branch_flags.names(ctx.bflags)

    # $msg.flag(NAME) / $(branch.flag(NAME)[i]): one flag, 1 or 0, writable (0 resets, other numbers
    # set). The name gets its bit when the script is loaded (check_key), as setflag(NAME) does.
    # Choice: OpenSIPS's value is both the integer and "true"/"false"; ours is the integer.
    def get_msg_flag(ctx: MsgContext, key: Any, index: Any) -> int:
        return 1 if ctx.flags & msg_flags.mask(key) else 0

    def set_msg_flag(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        mask = msg_flags.mask(key)
        ctx.flags = ctx.flags | mask if _flag_value(value, "$msg.flag") else ctx.flags & ~mask

    def get_branch_flag(ctx: MsgContext, key: Any, index: Any) -> int | None:
        flags = _bflags_get(ctx, _branch_index(index))
        return None if flags is None else 1 if flags & branch_flags.mask(key) else 0

    def set_branch_flag(ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        idx, mask = _branch_index(index), branch_flags.mask(key)
        flags = _bflags_get(ctx, idx)
        if flags is None:
            raise ValueError(f"$branch.flag({key}): there is no branch {idx}")
        _bflags_set(ctx, idx, flags | mask if _flag_value(value, "$branch.flag") else flags & ~mask)

    def name_msg_flag(key: str) -> None:
        msg_flags.bit(key)

    def name_branch_flag(key: str) -> None:
        branch_flags.bit(key)

    return [PVarSpec("mf", get_mf), PVarSpec("bf", get_bf),
            PVarSpec("msg.flag", get_msg_flag, set_msg_flag, key="required", check_key=name_msg_flag),
            PVarSpec("branch.flag", get_branch_flag, set_branch_flag, key="required",
                     check_key=name_branch_flag)]


def _flag_value(value: Any, what: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: the value must be an integer, got {value!r}")
    return value != 0


def _branch_index(index: Any) -> int:
    """The [i] of $(branch.flag(NAME)[i]): as setbflag's branch index (none: 0, the request URI)."""
    if index is None:
        return 0
    if index == "*" or not str(index).lstrip("-").isdigit():
        raise ValueError(f"$branch.flag: bad branch index {index!r}")
    return int(index)
