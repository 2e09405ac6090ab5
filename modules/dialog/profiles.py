"""Dialog profiles (OpenSIPS's profiles_with_value / profiles_no_value): which are declared, the script
functions that put a dialog in one or take it out (set_dlg_profile, unset_dlg_profile), ask about them
(is_in_profile, get_profile_size), the MI commands profile_get_size / profile_list_dlgs, and the sizes
across worker processes (shared.py's counters, when several workers run)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from routescript.core.module import Arg, MIError, mi_command, script_function
from routescript.script.context import MsgContext

from .core import DialogTable
from .current import ANY_ROUTE, current_dialog, need_dialog
from .mi import mi_dialog
from .shared import SharedProfiles

if TYPE_CHECKING:
    from .module import DialogModule

log = logging.getLogger("routescript.dialog")


def parse_profiles(values: Iterable[str]) -> list[str]:
    """profiles_with_value / profiles_no_value: names separated by ';' (several modparams add up). A
    "/s" or "/b" suffix (shared through cachedb or clustering) is refused: not built."""
    names: list[str] = []
    for text in values:
        for part in str(text).split(";"):
            name = part.strip()
            if not name:
                continue
            if "/" in name:
                raise ValueError(f"profile {name!r}: shared profiles (/s, /b) are not supported yet")
            names.append(name)
    return names


def as_list(value: Any) -> list[str]:
    """A multi modparam's value(s) as a list of strings."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def profiles_check(value: Any) -> None:
    parse_profiles(as_list(value))


class DialogProfiles:
    """The declared profiles and their script functions and MI commands; memberships themselves are
    kept by the owner's DialogTable (core.py), which is the worker's own once it runs as one."""

    def __init__(self, owner: DialogModule, with_value: Iterable[str], no_value: Iterable[str]) -> None:
        self.owner = owner
        self.with_value = set(with_value)
        self.no_value = set(no_value)
        self.shared: SharedProfiles | None = None
        self.slot = 0

    def check(self) -> str | None:
        """What is wrong with the declarations, or None."""
        both = self.with_value & self.no_value
        return f"dialog: profile(s) {sorted(both)} declared both with and without value" if both else None

    def share(self, slots: int) -> None:
        """Before fork: counters every worker adds its memberships to, when profiles are declared."""
        if slots > 1 and (self.with_value or self.no_value):
            self.shared = SharedProfiles(slots)

    def run_in_worker(self, slot: int, table: DialogTable) -> None:
        """In worker `slot`: its memberships counted in its own row of the shared counters."""
        self.slot = slot
        shared = self.shared
        if shared is not None and slot < shared.slots:
            shared.clear(slot)
            table.count_hook = lambda profile, value, delta: shared.add(slot, profile, value, delta)

    def adopt_worker(self, slot: int) -> None:
        """A dead worker's memberships stop counting."""
        if self.shared is not None and 0 <= slot < self.shared.slots and slot != self.slot:
            self.shared.clear(slot)

    def _profile(self, name: str, value: str | None, what: str) -> tuple[str, str | None] | None:
        if name in self.with_value:
            return name, value
        if name in self.no_value:
            return name, None   # OpenSIPS: a value for a profile without values is discarded
        log.error("%s: profile %r is not declared (profiles_with_value / profiles_no_value)", what, name)
        return None

    @script_function("set_dlg_profile", Arg("str", "profile"), Arg("str", "value", optional=True),
                     Arg("int", "clear_values", optional=True), routes=ANY_ROUTE)
    def set_dlg_profile(self, ctx: MsgContext, profile: str, value: str | None = None,
                        clear: int | None = None) -> int:
        dlg = need_dialog(ctx, "set_dlg_profile")
        key = self._profile(profile, value, "set_dlg_profile")
        if dlg is None or key is None:
            return -1
        if key[0] in self.with_value and key[1] is None:
            log.error("set_dlg_profile: profile %r needs a value", profile)
            return -1
        if not self.owner.table.link(dlg, key[0], key[1], clear=bool(clear)):
            log.error("set_dlg_profile: dialog %s is in too many profiles", dlg.dlg_id)
            return -1
        self.owner.writer.mark(dlg)
        return 1

    @script_function("unset_dlg_profile", Arg("str", "profile"), Arg("str", "value", optional=True),
                     routes=ANY_ROUTE)
    def unset_dlg_profile(self, ctx: MsgContext, profile: str, value: str | None = None) -> int:
        dlg = need_dialog(ctx, "unset_dlg_profile")
        key = self._profile(profile, value, "unset_dlg_profile")
        if dlg is None or key is None:
            return -1
        if not self.owner.table.unlink(dlg, key[0], key[1]):
            return -1
        self.owner.writer.mark(dlg)
        return 1

    @script_function("is_in_profile", Arg("str", "profile"), Arg("str", "value", optional=True),
                     routes=ANY_ROUTE)
    def is_in_profile(self, ctx: MsgContext, profile: str, value: str | None = None) -> int:
        dlg = current_dialog(ctx)
        key = self._profile(profile, value, "is_in_profile")
        if dlg is None or key is None:
            return -1
        return 1 if any(k[0] == key[0] and (key[1] is None or k[1] == key[1]) for k in dlg.profiles) else -1

    @script_function("get_profile_size", Arg("str", "profile"), Arg("str", "value", optional=True),
                     Arg("pvar", "size"), routes=ANY_ROUTE)
    def get_profile_size(self, ctx: MsgContext, profile: str, value: str | None, size: Any) -> int:
        key = self._profile(profile, value or None, "get_profile_size")
        if key is None:
            return -1
        size.set(ctx, self.size(key[0], key[1]))
        return 1

    def size(self, profile: str, value: str | None) -> int:
        """Every worker's count (shared.py) when several run; this one's otherwise."""
        mine = self.owner.table.profile_size(profile, value)
        if self.shared is None:
            return mine
        return mine + self.shared.others(self.slot, profile, value)

    def _declared(self, profile: str, value: str | None) -> str | None:
        """The value to look up in a declared profile (none for a profile without values); MI 404 when
        the profile is not declared."""
        if profile not in self.with_value and profile not in self.no_value:
            raise MIError("Profile not found", 404)
        return value if profile in self.with_value else None

    @mi_command("profile_get_size", aliases=("dialog:profile_get_size",), optional=("value",),
                workers="one", doc="how many dialogs a profile (with a value) holds")
    def mi_profile_get_size(self, profile: str, value: str | None = None) -> dict[str, Any]:
        count = self.size(profile, self._declared(profile, value))
        return {"profile": {"name": profile, "value": value or "", "count": count}}

    @mi_command("profile_list_dlgs", aliases=("dialog:profile_list_dlgs",), optional=("value",),
                workers="concat", doc="the dialogs of a profile (with a value)")
    def mi_profile_list_dlgs(self, profile: str, value: str | None = None) -> dict[str, Any]:
        use = self._declared(profile, value)
        return {"Dialogs": [mi_dialog(d, False) for d in self.owner.table.in_profile(profile, use)]}
