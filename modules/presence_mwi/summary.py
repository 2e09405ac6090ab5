"""message-summary bodies (RFC 3842, application/simple-message-summary): the PUBLISH body check.

Pure functions, bytes in, values out. The package keeps no aggregation: the newest publication is passed
through to watchers unchanged (OpenSIPS presence_mwi registers no agg_nbody), and with no publication the
NOTIFY has no body.

RFC 3842 section 5.2 (the ABNF this parser implements, line by line):
    message-summary   = msg-status-line CRLF
                        [msg-account CRLF]
                        [*(msg-summary-line CRLF)]
                        [ *opt-msg-headers ]
    msg-status-line   = "Messages-Waiting" HCOLON msg-status
    msg-status        = "yes" / "no"
    msg-account       = "Message-Account" HCOLON Account-URI
    Account-URI       = SIP-URI / SIPS-URI / absoluteURI
    msg-summary-line  = message-context-class HCOLON newmsgs SLASH oldmsgs
                        [ LPAREN new-urgentmsgs SLASH old-urgentmsgs RPAREN ]
    opt-msg-headers   = CRLF 1*(extension-header CRLF)
    newmsgs = msgcount; oldmsgs = msgcount; new-urgentmsgs = msgcount; old-urgentmsgs = msgcount
    msgcount          = 1*DIGIT
RFC 3458: message-context-class = "voice-message" / "fax-message" / "pager-message" /
                                  "multimedia-message" / "text-message" / "none" / token (extensions)
RFC 3261: HCOLON = *( SP / HTAB ) ":" SWS;  SLASH = SWS "/" SWS;  LPAREN = SWS "(" SWS;
          RPAREN = SWS ")" SWS;  extension-header = header-name HCOLON header-value
ABNF literals are case-insensitive, so "messages-waiting: YES" is accepted.

Choices where OpenSIPS (mwi_publ_handl) differs:
- OpenSIPS only checks the first line (case-sensitively) and that the rest is printable ASCII, and answers a
  refused body with 500; we check the whole grammar and answer 400 "Bad request" (the peer's fault).
- Lines may end in LF as well as CRLF (voicemail servers that write bare LF are common; nothing is ambiguous).
- extension-header values may be UTF-8 (RFC 3261 TEXT-UTF8), control characters are refused.
- An empty body is accepted, as OpenSIPS does: a body-less PUBLISH is a refresh, the presence core's call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from routescript.modules.presence.events import BodyError, PresenceEvent

__all__ = [
    "CONTENT_TYPE",
    "EVENT_NAME",
    "MAX_SUMMARY_LINES",
    "MAX_SUMMARY_SIZE",
    "MessageSummary",
    "MsgSummaryLine",
    "check_message_summary",
    "mwi_event",
    "parse_message_summary",
]

EVENT_NAME = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"

# Bounds: a real summary is a few lines (one per message class plus a few headers).
MAX_SUMMARY_SIZE = 8192
MAX_SUMMARY_LINES = 128
MAX_MSGCOUNT_DIGITS = 9

BAD_REQUEST = (400, "Bad request")  # the phrase OpenSIPS's presence module uses for 400
TOO_LARGE = (413, "Request Entity Too Large")

_SP = r"[ \t]*"
_HCOLON = _SP + ":" + _SP
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - the RFC 3261 token rule, not a secret
_COUNT = rf"[0-9]{{1,{MAX_MSGCOUNT_DIGITS}}}"

_STATUS_LINE = re.compile(r"Messages-Waiting" + _HCOLON + r"(yes|no)" + _SP, re.IGNORECASE)
# Account-URI: SIP-URI / SIPS-URI / absoluteURI - any "scheme:" followed by non-blank characters.
_ACCOUNT_LINE = re.compile(r"Message-Account" + _HCOLON + r"([A-Za-z][A-Za-z0-9+\-.]*:[^\s]+)" + _SP,
                           re.IGNORECASE)
_SUMMARY_LINE = re.compile(
    r"(" + _TOKEN + r")" + _HCOLON + r"(" + _COUNT + r")" + _SP + "/" + _SP + r"(" + _COUNT + r")"
    + r"(?:" + _SP + r"\(" + _SP + r"(" + _COUNT + r")" + _SP + "/" + _SP + r"(" + _COUNT + r")"
    + _SP + r"\))?"
    + _SP)
_EXTENSION_HEADER = re.compile(r"(" + _TOKEN + r")" + _HCOLON + r"([^\x00-\x08\x0a-\x1f\x7f]*)")


@dataclass(frozen=True, slots=True)
class MsgSummaryLine:
    """One msg-summary-line: `Voice-Message: 2/8 (0/2)`; urgent counts None when not given."""

    context_class: str
    new: int
    old: int
    new_urgent: int | None = None
    old_urgent: int | None = None


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A parsed application/simple-message-summary body."""

    messages_waiting: bool
    account: str | None = None
    summaries: tuple[MsgSummaryLine, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


def _refuse(why: str) -> BodyError:
    err = BodyError(*BAD_REQUEST)
    err.add_note(why)  # for the log line; never on the wire
    return err


def _lines(body: bytes) -> list[str]:
    if len(body) > MAX_SUMMARY_SIZE:
        raise BodyError(*TOO_LARGE)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("not UTF-8") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if len(lines) > MAX_SUMMARY_LINES:
        raise _refuse(f"more than {MAX_SUMMARY_LINES} lines")
    while lines and lines[-1] == "":  # the CRLF ending the last line, and trailing blank lines
        lines.pop()
    if any("\r" in line for line in lines):
        raise _refuse("bare CR inside a line")
    return lines


def parse_message_summary(body: bytes) -> MessageSummary:
    """Parse a message-summary body per RFC 3842 (see the module docstring); raise `BodyError` (400, or
    413 above MAX_SUMMARY_SIZE) when it does not follow the grammar."""
    lines = _lines(bytes(body))
    if not lines:
        raise _refuse("no msg-status-line")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise _refuse("first line is not 'Messages-Waiting: yes|no'")
    index = 1
    account = None
    if index < len(lines):
        match = _ACCOUNT_LINE.fullmatch(lines[index])
        if match is not None:
            account = match.group(1)
            index += 1
    summaries: list[MsgSummaryLine] = []
    while index < len(lines) and lines[index] != "":
        match = _SUMMARY_LINE.fullmatch(lines[index])
        if match is None:
            raise _refuse(f"line {index + 1} is not a msg-summary-line")
        cls, new, old, new_urgent, old_urgent = match.groups()
        summaries.append(MsgSummaryLine(cls, int(new), int(old),
                                        int(new_urgent) if new_urgent is not None else None,
                                        int(old_urgent) if old_urgent is not None else None))
        index += 1
    headers: list[tuple[str, str]] = []
    # opt-msg-headers = CRLF 1*(extension-header CRLF): blank line, then at least one header line.
    while index < len(lines):
        if lines[index] != "":  # pragma: no cover - the summary loop stops only at a blank line
            raise _refuse(f"unexpected line {index + 1}")
        index += 1
        if index >= len(lines) or lines[index] == "":
            raise _refuse("blank line not followed by an extension header")
        while index < len(lines) and lines[index] != "":
            match = _EXTENSION_HEADER.fullmatch(lines[index])
            if match is None:
                raise _refuse(f"line {index + 1} is not an extension header")
            headers.append((match.group(1), match.group(2).strip()))
            index += 1
    return MessageSummary(status.group(1).lower() == "yes", account, tuple(summaries), tuple(headers))


def check_message_summary(body: bytes) -> None:
    """evs_publ_handl for message-summary: None when the body is acceptable (an empty body is: that is a
    refresh, judged by the presence core), else `BodyError` with the status to answer the PUBLISH with."""
    if not body:
        return
    parse_message_summary(body)


def mwi_event() -> PresenceEvent:
    """The `message-summary` event package as OpenSIPS presence_mwi registers it: no authorization, no
    aggregation (the newest publication is sent as it is), no body when nothing is published."""
    return PresenceEvent(EVENT_NAME, CONTENT_TYPE, default_expires=3600, evs_publ_handl=check_message_summary)
