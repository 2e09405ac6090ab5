"""textops - regular-expression operations on the message text (OpenSIPS textops).

search(re) looks at the whole message, search_body(re) at the body; as in OpenSIPS the regex is
POSIX-extended, case-insensitive, and `^`/`$` match at line ends. subst('/re/repl/flags') edits the
message after its first line (headers and body, as OpenSIPS's subst does), subst_body the body,
subst_uri the Request-URI and subst_user its user part; replace/replace_all/replace_body* are the
plain forms. The expression syntax is the one of the {re.subst} transformation (first character is
the delimiter; flags g, i, s; \\0..\\9 in the replacement).

Choice where OpenSIPS differs: OpenSIPS records these edits as "lumps" applied when the message is
sent, so the script still reads the old text afterwards; here the message is edited at once (as
append_hf does), so later pseudo-variables see the new text. A result that is no longer a valid SIP
message is refused (-1, logged) and the message is left as it was. Pseudo-variables inside the
replacement are not expanded.

For scripts written for OpenSIPS 1.x, where textops also held the header functions, those are
exported here too (same implementation as sipmsgops)."""

from __future__ import annotations

import logging
import re
from typing import Any

from routescript.core.module import Arg, Module, script_function
from routescript.modules.sipmsgops import HeaderFunctions
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.script.transforms import SubstExpr

log = logging.getLogger("routescript.textops")

_FLAGS = re.IGNORECASE | re.MULTILINE


def _rx(pattern: re.Pattern[str] | str) -> re.Pattern[str]:
    text = pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)
    return re.compile(text, _FLAGS)


def _regex_fixup(value: object) -> object:
    try:
        return _rx(value)  # type: ignore[arg-type]
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from None


def _subst_fixup(value: object) -> object:
    """'/re/repl/flags' compiled at load time (a bad one is a file:line:col error)."""
    if isinstance(value, SubstExpr):
        return value
    return SubstExpr(str(value))


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _split(msg: Any) -> tuple[str, str, str]:
    """(first line with its CRLF, header lines up to the blank line, body) of the message text."""
    raw = _text(msg.to_bytes())
    head, sep, body = raw.partition("\r\n\r\n")
    first, crlf, headers = head.partition("\r\n")
    return first + crlf, headers + sep, body


def _replace_message(ctx: MsgContext, first: str, headers: str, body: str, what: str) -> int:
    """Re-parse the edited text into ctx.msg; -1 (logged) when it is no longer a SIP message."""
    from routescript.sip import ParseError, parse_message

    old = ctx.msg
    old_body = _text(old.body)
    try:
        new = parse_message(_bytes(first + headers + old_body))
        if body != old_body:
            new.set_body(_bytes(body))
    except (ParseError, ValueError) as exc:
        log.error("%s: the edited message is not valid SIP (%s); left unchanged", what, exc)
        return -1
    ctx.msg = new
    return 1


def _edit(ctx: MsgContext, expr: SubstExpr | None, rx: re.Pattern[str] | None, repl: str,
          count: int, *, headers_too: bool, body_too: bool, what: str) -> int:
    msg = ctx.msg
    if msg is None:
        return -1
    first, headers, body = _split(msg)
    changed = False
    parts = []
    for part, on in ((headers, headers_too), (body, body_too)):
        if on and part:
            new = expr.apply(part) if expr is not None else rx.sub(lambda m: repl, part, count=count)  # type: ignore[union-attr]
            changed |= new != part
            parts.append(new)
        else:
            parts.append(part)
    if not changed:
        return -1  # OpenSIPS: nothing matched -> -1
    return _replace_message(ctx, first, parts[0], parts[1], what)


class TextopsModule(HeaderFunctions, Module):
    name = "textops"

    @script_function("search", Arg("regex", "re", fixup=_regex_fixup))
    def search(self, ctx: MsgContext, pattern: re.Pattern[str]) -> int:
        if ctx.msg is None:
            return -1
        return 1 if _rx(pattern).search(_text(ctx.msg.to_bytes())) else -1

    @script_function("search_body", Arg("regex", "re", fixup=_regex_fixup))
    def search_body(self, ctx: MsgContext, pattern: re.Pattern[str]) -> int:
        if ctx.msg is None or not ctx.msg.body:
            return -1
        return 1 if _rx(pattern).search(_text(ctx.msg.body)) else -1

    @script_function("search_append", Arg("regex", "re", fixup=_regex_fixup), Arg("str", "txt"))
    def search_append(self, ctx: MsgContext, pattern: re.Pattern[str], text: str) -> int:
        """Insert txt after the first match (headers first, then the body)."""
        return self._search_append(ctx, _rx(pattern), text)

    def _search_append(self, ctx: MsgContext, rx: re.Pattern[str], text: str) -> int:
        if ctx.msg is None:
            return -1
        first, headers, body = _split(ctx.msg)
        m = rx.search(headers)
        if m is not None:
            return _replace_message(ctx, first, headers[:m.end()] + text + headers[m.end():], body,
                                    "search_append")
        m = rx.search(body)
        if m is None:
            return -1
        return _replace_message(ctx, first, headers, body[:m.end()] + text + body[m.end():], "search_append")

    @script_function("replace", Arg("regex", "re", fixup=_regex_fixup), Arg("str", "txt"))
    def replace(self, ctx: MsgContext, pattern: re.Pattern[str], text: str) -> int:
        return _edit(ctx, None, _rx(pattern), text, 1, headers_too=True, body_too=True, what="replace")

    @script_function("replace_all", Arg("regex", "re", fixup=_regex_fixup), Arg("str", "txt"))
    def replace_all(self, ctx: MsgContext, pattern: re.Pattern[str], text: str) -> int:
        return _edit(ctx, None, _rx(pattern), text, 0, headers_too=True, body_too=True, what="replace_all")

    @script_function("replace_body", Arg("regex", "re", fixup=_regex_fixup), Arg("str", "txt"))
    def replace_body(self, ctx: MsgContext, pattern: re.Pattern[str], text: str) -> int:
        return _edit(ctx, None, _rx(pattern), text, 1, headers_too=False, body_too=True, what="replace_body")

    @script_function("replace_body_all", Arg("regex", "re", fixup=_regex_fixup), Arg("str", "txt"))
    def replace_body_all(self, ctx: MsgContext, pattern: re.Pattern[str], text: str) -> int:
        return _edit(ctx, None, _rx(pattern), text, 0, headers_too=False, body_too=True,
                     what="replace_body_all")

    @script_function("subst", Arg("str", "subst_re", fixup=_subst_fixup))
    def subst(self, ctx: MsgContext, expr: Any) -> int:
        return _edit(ctx, _subst_fixup(expr), None, "", 0, headers_too=True, body_too=True,  # type: ignore[arg-type]
                     what="subst")

    @script_function("subst_body", Arg("str", "subst_re", fixup=_subst_fixup))
    def subst_body(self, ctx: MsgContext, expr: Any) -> int:
        return _edit(ctx, _subst_fixup(expr), None, "", 0, headers_too=False, body_too=True,  # type: ignore[arg-type]
                     what="subst_body")

    @script_function("subst_uri", Arg("str", "subst_re", fixup=_subst_fixup), routes=(REQUEST_ROUTE,))
    def subst_uri(self, ctx: MsgContext, expr: Any) -> int:
        """The whole Request-URI through the expression; -1 when nothing matched or the result is
        not a URI."""
        return _set_ruri(ctx, _subst_fixup(expr), user_only=False)  # type: ignore[arg-type]

    @script_function("subst_user", Arg("str", "subst_re", fixup=_subst_fixup), routes=(REQUEST_ROUTE,))
    def subst_user(self, ctx: MsgContext, expr: Any) -> int:
        """The user part of the Request-URI through the expression (an absent user is "")."""
        return _set_ruri(ctx, _subst_fixup(expr), user_only=True)  # type: ignore[arg-type]

    # The header functions of OpenSIPS 1.x textops come from HeaderFunctions (sipmsgops's own).


def _set_ruri(ctx: MsgContext, expr: SubstExpr, *, user_only: bool) -> int:
    from routescript.sip import ParseError, parse_uri

    msg = ctx.msg
    if msg is None or not msg.is_request:
        return -1
    old = msg.ruri
    try:
        if user_only:
            # the user part as written (between "scheme:" and "@", password kept apart)
            scheme, _, rest = old.partition(":")
            at = rest.find("@")
            userinfo, hostpart = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
            user, colon, password = userinfo.partition(":")
            new_user = expr.apply(user) if user else (expr.apply("") if expr.pattern.search("") else "")
            if new_user == user:
                return -1
            new = f"{scheme}:{new_user}{colon}{password}@{hostpart}" if new_user else f"{scheme}:{hostpart}"
        else:
            new = expr.apply(old)
            if new == old:
                return -1
        parse_uri(new)
    except (ParseError, ValueError) as exc:
        log.error("%s: result is not a valid URI (%s); R-URI unchanged",
                  "subst_user" if user_only else "subst_uri", exc)
        return -1
    msg.ruri = new
    return 1


MODULE = TextopsModule
