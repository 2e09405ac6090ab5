"""presence_dialoginfo: the `dialog` event package (RFC 4235 dialog state) for the presence module, as
OpenSIPS presence_dialoginfo; also home of the `dialog;sla` (BLA) package and its helpers. The document work
is in dialoginfo.py and bla.py.

OpenSIPS 3.4 presence_dialoginfo exports one parameter, force_single_dialog, and no script function.
`dialog;sla` is registered by OpenSIPS's presence_xml (Allow-Events lists it between presence.winfo and
message-summary); this module registers it only when no other module has (presence_xml not loaded), so
Allow-Events keeps OpenSIPS's order when both are.
"""

from __future__ import annotations

from routescript.core.module import ConfigError, Module, Param

from .bla import (BLA_EVENT_NAME, bla_event, bla_presentity, bla_presentity_from_value, fix_remote_target,
                  fix_remote_target_doc)
from .dialoginfo import (CONTENT_TYPE, EVENT_NAME, NS_DIALOG_INFO, aggregate_dialog_info, check_dialog_info,
                         dialog_event, empty_dialog_info, set_version)

__all__ = [
    "BLA_EVENT_NAME", "CONTENT_TYPE", "EVENT_NAME", "MODULE", "NS_DIALOG_INFO", "PresenceDialoginfoModule",
    "aggregate_dialog_info", "bla_event", "bla_presentity", "bla_presentity_from_value", "check_dialog_info",
    "dialog_event", "empty_dialog_info", "fix_remote_target", "fix_remote_target_doc", "set_version",
]


def _bool_flag(value: int) -> None:
    if value not in (0, 1):
        raise ValueError("must be 0 or 1")


class PresenceDialoginfoModule(Module):
    name = "presence_dialoginfo"
    depends = ("presence",)
    params = (
        Param("force_single_dialog", int, 0, "1: NOTIFY only the most interesting dialog", check=_bool_flag),
        Param("force_dummy_dialog", int, 0,
              "1: a document without any dialog carries a dummy terminated one (phones that need one)",
              check=_bool_flag),
    )

    def check(self) -> None:
        from routescript.modules.presence import bind_presence

        presence = bind_presence(self.server)
        if presence is None:
            raise ConfigError("presence_dialoginfo needs the presence module loaded before it")
        if presence.contains_event(BLA_EVENT_NAME) is None:
            presence.add_event(bla_event(fix_remote_target=self._bla_fix_remote_target(presence)))
        presence.add_event(dialog_event(force_single_dialog=bool(self.param("force_single_dialog")),
                                        force_dummy_dialog=bool(self.param("force_dummy_dialog"))))

    @staticmethod
    def _bla_fix_remote_target(presence: Module) -> bool:
        # bla_fix_remote_target is a presence modparam (default 1).
        try:
            return bool(presence.param("bla_fix_remote_target"))
        except KeyError:
            return True


MODULE = PresenceDialoginfoModule
