"""presence_mwi: the `message-summary` event package (RFC 3842 message waiting indication) for the
presence module, as OpenSIPS presence_mwi. The body check is in summary.py.

OpenSIPS presence_mwi exports no parameters and no script functions; loading it adds the event.
"""

from __future__ import annotations

from routescript.core.module import ConfigError, Module

from .summary import (CONTENT_TYPE, EVENT_NAME, MessageSummary, MsgSummaryLine, check_message_summary,
                      mwi_event, parse_message_summary)

__all__ = ["CONTENT_TYPE", "EVENT_NAME", "MODULE", "MessageSummary", "MsgSummaryLine", "PresenceMwiModule",
           "check_message_summary", "mwi_event", "parse_message_summary"]


class PresenceMwiModule(Module):
    name = "presence_mwi"
    depends = ("presence",)

    def check(self) -> None:
        from routescript.modules.presence import bind_presence

        presence = bind_presence(self.server)
        if presence is None:
            raise ConfigError("presence_mwi needs the presence module loaded before it")
        presence.add_event(mwi_event())


MODULE = PresenceMwiModule
