"""auth - digest authentication (OpenSIPS 3.4 auth module). docs/modules/auth.md lists every parameter
and function, and where we differ.

www_challenge / proxy_challenge send 401 / 407 with one WWW-/Proxy-Authenticate per offered algorithm
(RFC 8760), a signed nonce (nonce.py) and qop. The verification steps OpenSIPS's auth API gives
auth_db (bind_auth: pre_auth, check_response, post_auth) are methods here that auth_db calls through
`server.modules`; pv_www_authorize / pv_proxy_authorize use them with the password from a
pseudo-variable. $au, $ad, $aU, $ar, $an, $adu and $auth.* (OpenSIPS core pseudo-variables) come with
this module.

Return codes (OpenSIPS auth_result_t): -5 error (a 400 or 500 may have been sent), -4 no credentials,
-3 stale nonce (expired, not ours, or used already), -2 invalid password, -1 unknown user, 1 authorized.
Passwords, HA1s and responses are never logged.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from routescript.core.module import Arg, ConfigError, Module, Param, pseudo_variable, script_function
from routescript.script.context import BRANCH_ROUTE, FAILURE_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest, parse_uri

from .digest import (
    ALGORITHMS,
    QOP_AUTH,
    QOP_AUTH_INT,
    Algorithm,
    Credentials,
    DigestParseError,
    algorithm,
    calc_ha1,
    calc_response,
    challenge_values,
    parse_algorithms,
    parse_credentials,
    parse_qop,
    session_ha1,
)
from .nonce import NonceIndex, NonceMint, NonceState

log = logging.getLogger("routescript.auth")

# OpenSIPS auth_result_t
AUTH_ERROR = -5
NO_CREDENTIALS = -4
STALE_NONCE = -3
INVALID_PASSWORD = -2
USER_UNKNOWN = -1
AUTHORIZED = 1

WWW_AUTH = "Authorization"
PROXY_AUTH = "Proxy-Authorization"
_STATE = "auth"          # ctx.extra key: the message's _AuthState
_PV_SPEC = re.compile(r"\$(var|avp)\(([A-Za-z0-9_.\-]+)\)\Z")
_E164 = re.compile(r"\+[0-9]{1,15}\Z")


class _AuthState:
    """Per message: a stale nonce seen (the next challenge says stale=true) and the credentials
    authorized (for consume_credentials)."""

    __slots__ = ("stale", "authorized")

    def __init__(self) -> None:
        self.stale = False
        self.authorized: tuple[str, str] | None = None   # (header name, the value as received)


def _state(ctx: MsgContext) -> _AuthState:
    state = ctx.extra.get(_STATE)
    if state is None:
        state = ctx.extra[_STATE] = _AuthState()
    return state


@dataclass(frozen=True, slots=True)
class PreAuth:
    """What pre_auth found: a final `code` (the caller returns it), or credentials to check."""

    code: int = 0
    cred: Credentials | None = None
    realm: str = ""
    alg: Algorithm | None = None
    header: tuple[str, str] | None = None
    index: int = 0


def _pv_spec(text: str) -> tuple[str, str]:
    m = _PV_SPEC.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a pseudo-variable (expected e.g. \"$var(username)\" or "
                         f"\"$avp(password)\")")
    return m.group(1), m.group(2)


def _check_bool(v: Any) -> None:
    if int(v) not in (0, 1):
        raise ValueError("must be 0 or 1")


def _check_expire(v: Any) -> None:
    if not 1 <= int(v) <= 3600:
        raise ValueError("nonce_expire must be between 1 and 3600 seconds")


def _check_spec(v: Any) -> None:
    if v:
        _pv_spec(str(v))


def _fix_qop(v: Any) -> Any:
    parse_qop(str(v))
    return str(v)


def _fix_algorithms(v: Any) -> Any:
    parse_algorithms(str(v))
    return str(v)


@functools.lru_cache(maxsize=64)
def _offer(qop: str | None, algorithms: str | None) -> tuple[int, tuple[Algorithm, ...]]:
    """(qop bits, algorithms) of a challenge's arguments; ValueError when bad. Cached: scripts pass
    a handful of literals (a pseudo-variable's value is checked the same way, once per value)."""
    return parse_qop(qop), parse_algorithms(algorithms)


class AuthModule(Module):
    name = "auth"
    params = (
        Param("secret", str, None, "phrase the nonces are signed with (default: random per server start)"),
        Param("nonce_expire", int, 30, "seconds a nonce stays valid", check=_check_expire),
        Param("rpid_prefix", str, "", "prefix of the Remote-Party-ID append_rpid_hf() adds"),
        Param("rpid_suffix", str, ";party=calling;id-type=subscriber;screen=yes",
              "suffix of the Remote-Party-ID append_rpid_hf() adds"),
        Param("realm_prefix", str, "", "prefix stripped from a realm taken from the request"),
        Param("rpid_avp", str, "$avp(rpid)", "AVP holding the RPID URI (auth_db load_credentials sets it)"),
        Param("username_spec", str, None, "pseudo-variable with the username (pv_*_authorize)",
              check=_check_spec),
        Param("password_spec", str, None, "pseudo-variable with the password or HA1 (pv_*_authorize)",
              check=_check_spec),
        Param("calculate_ha1", int, 0, "1: password_spec holds a plain-text password", check=_check_bool),
        Param("disable_nonce_check", int, 0, "1: no replay check (a nonce may be used more than once)",
              check=_check_bool),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # Made here, at load, in the process that forks the workers: they share the secret and the
        # replay table (nonce.py).
        self.mint = NonceMint.from_phrase(self.param("secret"), int(self.param("nonce_expire")))
        self.nonce_check = not int(self.param("disable_nonce_check"))
        self.index = NonceIndex.shared() if self.nonce_check else NonceIndex.local(size=1)
        self.realm_prefix = str(self.param("realm_prefix") or "")
        self.calculate_ha1 = bool(int(self.param("calculate_ha1")))
        self.clock: Callable[[], float] = time.time
        user_spec, pass_spec = self.param("username_spec"), self.param("password_spec")
        self._user_spec = _pv_spec(user_spec) if user_spec else None
        self._pass_spec = _pv_spec(pass_spec) if pass_spec else None
        if self._user_spec is None or self._pass_spec is None:
            why = ("pv_www_authorize()/pv_proxy_authorize() read the credentials from pseudo-variables: "
                   "set modparam(\"auth\", \"username_spec\", ...) and "
                   "modparam(\"auth\", \"password_spec\", ...)")
            self.refused["pv_www_authorize"] = why
            self.refused["pv_proxy_authorize"] = why
        rpid = self.param("rpid_avp")
        self._rpid_avp: str | None = None
        if rpid:
            name, key = _pv_spec(str(rpid))
            if name != "avp":
                raise ConfigError(f"modparam(\"auth\", \"rpid_avp\"): {rpid!r} must be an AVP ($avp(name))")
            self._rpid_avp = key

    # --- the steps auth_db uses (OpenSIPS's auth API) ------------------------------------------------

    def request_realm(self, msg: SIPRequest, header: str) -> str:
        """The realm of an empty realm argument: the To host of a REGISTER (www), else the From host,
        less realm_prefix. Raises ParseError."""
        uri = msg.to.uri if (msg.method == "REGISTER" and header == WWW_AUTH) else msg.from_.uri
        realm = uri.host or ""
        prefix = self.realm_prefix
        if prefix and realm.startswith(prefix) and len(realm) > len(prefix):
            realm = realm[len(prefix):]
        return realm

    def _bad(self, ctx: MsgContext, code: int, reason: str) -> PreAuth:
        """A reply for credentials we cannot use (OpenSIPS pre_auth sends it too) and ERROR."""
        try:
            self.server.reply(ctx, code, reason)
        except Exception:
            log.exception("auth: could not send %d", code)
        return PreAuth(code=AUTH_ERROR)

    def pre_auth(self, ctx: MsgContext, realm: str, header: str) -> PreAuth:
        """Find the credentials of `realm` in `header` lines, check their form and their nonce."""
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            log.error("auth: no request to authorize")
            return PreAuth(code=AUTH_ERROR)
        if msg.method in ("ACK", "CANCEL"):
            return PreAuth(code=AUTHORIZED)   # never challenged (OpenSIPS: always authorized)
        try:
            if not realm:
                realm = self.request_realm(msg, header)
        except ParseError as exc:
            log.error("auth: cannot take the realm from the request: %s", exc.reason)
            return self._bad(ctx, 400, "Bad Request")
        found: tuple[Credentials, str] | None = None
        for value in msg.header_all(header):
            try:
                cred = parse_credentials(value)
            except DigestParseError as exc:
                log.info("auth: malformed %s header (Call-ID %s): %s", header, msg.call_id, exc.reason)
                return self._bad(ctx, 400, exc.reason)
            if cred is not None and cred.realm.lower() == realm.lower():
                found = (cred, value)
                break
        if found is None:
            return PreAuth(code=NO_CREDENTIALS, realm=realm)
        cred, value = found
        alg = algorithm(cred.algorithm)
        if alg is None:
            log.info("auth: unsupported algorithm in %s (Call-ID %s)", header, msg.call_id)
            return self._bad(ctx, 400, "Unsupported digest algorithm")
        info = self.mint.check(cred.nonce, self.clock())
        if info.state is not NonceState.VALID:
            log.debug("auth: %s nonce from %s@%s", info.state.value, cred.username, realm)
            _state(ctx).stale = True
            return PreAuth(code=STALE_NONCE, cred=cred, realm=realm, alg=alg)
        offered_qop = {None: True, "auth": info.offered & QOP_AUTH, "auth-int": info.offered & QOP_AUTH_INT}
        if not info.offered & alg.bit or not offered_qop[cred.qop]:
            log.info("auth: %s@%s answered with algorithm %s / qop %s, not offered", cred.username, realm,
                     alg.name, cred.qop)
            return PreAuth(code=INVALID_PASSWORD, cred=cred, realm=realm, alg=alg)
        return PreAuth(cred=cred, realm=realm, alg=alg, header=(header, value), index=info.index)

    def check_response(self, ctx: MsgContext, pre: PreAuth, ha1: str) -> bool:
        """Does the credentials' response match HA1 `ha1` (of pre.alg's hash; the -sess HA1 is made here)?"""
        cred, alg = pre.cred, pre.alg
        assert cred is not None and alg is not None and isinstance(ctx.msg, SIPRequest)
        if len(cred.response) != alg.hex_length or len(ha1) != alg.hex_length:
            return False
        ha1 = session_ha1(alg, ha1, cred.nonce, cred.cnonce or "")
        expected = calc_response(alg, ha1, nonce=cred.nonce, method=ctx.msg.method, uri=cred.uri,
                                 qop=cred.qop, nc=cred.nc or "", cnonce=cred.cnonce or "", body=ctx.msg.body)
        return hmac.compare_digest(expected, cred.response)

    def post_auth(self, ctx: MsgContext, pre: PreAuth) -> int:
        """After a matching response: the replay check, then the credentials are marked authorized."""
        assert pre.header is not None and pre.cred is not None
        if self.nonce_check and not self.index.use(pre.index):
            log.info("auth: nonce of %s@%s used already: stale", pre.cred.username, pre.realm)
            _state(ctx).stale = True
            return STALE_NONCE
        _state(ctx).authorized = pre.header
        return AUTHORIZED

    def authorize(self, ctx: MsgContext, realm: str, header: str,
                  get_ha1: Callable[[PreAuth], tuple[int, str | None]]) -> int:
        """pre_auth, the backend's HA1 (`get_ha1(pre)` -> (0, ha1) or (code, None)), check, post_auth."""
        pre = self.pre_auth(ctx, realm, header)
        if pre.code:
            return pre.code
        code, ha1 = get_ha1(pre)
        if code:
            return code
        assert ha1 is not None and pre.cred is not None
        if not self.check_response(ctx, pre, ha1):
            log.info("auth: wrong password for %s@%s", pre.cred.username, pre.realm)
            return INVALID_PASSWORD
        return self.post_auth(ctx, pre)

    # --- challenges -------------------------------------------------------------------------------------

    def _challenge(self, ctx: MsgContext, realm: str, qop: str | None, algorithms: str | None,
                   code: int, reason: str, header: str) -> int:
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            log.error("auth: no request to challenge")
            return -1
        if ctx.replied:
            # the usual script after www_authorize() answered 400 to a malformed header: not an error
            log.info("auth: a final reply was sent already (Call-ID %s): no %d", msg.call_id, code)
            return -1
        try:
            qop_bits, algs = _offer(qop or None, algorithms or None)
        except ValueError as exc:
            log.error("auth: %s", exc)
            return -1
        try:
            if not realm:
                realm = self.request_realm(msg, WWW_AUTH if code == 401 else PROXY_AUTH)
        except ParseError as exc:
            log.error("auth: cannot take the realm from the request: %s", exc.reason)
            return -1
        index = self.index.allocate() if self.nonce_check else 0
        offered = qop_bits | sum(a.bit for a in algs)
        nonce = self.mint.make(self.clock(), index, offered)
        state = ctx.extra.get(_STATE)
        stale = bool(state is not None and state.stale)
        values = challenge_values(realm, nonce, self.mint.opaque, qop_bits, algs, stale)
        self.server.reply(ctx, code, reason, headers=[(header, v) for v in values])
        return 1

    @script_function("www_challenge", Arg("str", "realm"), Arg("str", "qop", optional=True, fixup=_fix_qop),
                     Arg("str", "algorithms", optional=True, fixup=_fix_algorithms), routes=(REQUEST_ROUTE,))
    def www_challenge(self, ctx: MsgContext, realm: str, qop: str | None = None,
                      algorithms: str | None = None) -> int:
        return self._challenge(ctx, realm, qop, algorithms, 401, "Unauthorized", "WWW-Authenticate")

    @script_function("proxy_challenge", Arg("str", "realm"), Arg("str", "qop", optional=True, fixup=_fix_qop),
                     Arg("str", "algorithms", optional=True, fixup=_fix_algorithms), routes=(REQUEST_ROUTE,))
    def proxy_challenge(self, ctx: MsgContext, realm: str, qop: str | None = None,
                        algorithms: str | None = None) -> int:
        return self._challenge(ctx, realm, qop, algorithms, 407, "Proxy Authentication Required",
                               "Proxy-Authenticate")

    @script_function("consume_credentials", routes=(REQUEST_ROUTE,))
    def consume_credentials(self, ctx: MsgContext) -> int:
        state = ctx.extra.get(_STATE)
        msg = ctx.msg
        if state is None or state.authorized is None or not isinstance(msg, SIPRequest):
            log.error("consume_credentials: no authorized credentials found")
            return -1
        name, value = state.authorized
        lines = msg.header_all(name)
        msg.remove_header(name)
        dropped = False
        for line in lines:
            if line == value and not dropped:
                dropped = True
                continue
            msg.add_header(name, line)   # the other credentials stay (after the other headers)
        state.authorized = None
        return 1

    # --- pv_www_authorize / pv_proxy_authorize -----------------------------------------------------

    def _pv_value(self, ctx: MsgContext, spec: tuple[str, str]) -> Any:
        registry = self.server.registry
        pv = registry.pvars.get(spec[0]) if registry is not None else None
        if pv is not None:
            return pv.getter(ctx, spec[1], None)
        if spec[0] == "var":
            return ctx.vars.get(spec[1])
        values = ctx.avps.get(spec[1])
        return values[0] if values else None

    def _pv_authorize(self, ctx: MsgContext, realm: str, header: str) -> int:
        assert self._user_spec is not None and self._pass_spec is not None

        def get_ha1(pre: PreAuth) -> tuple[int, str | None]:
            assert pre.cred is not None and pre.alg is not None
            user = self._pv_value(ctx, self._user_spec)   # type: ignore[arg-type]
            password = self._pv_value(ctx, self._pass_spec)   # type: ignore[arg-type]
            if user is None or password is None or str(user).lower() != pre.cred.user.lower():
                return USER_UNKNOWN, None
            if self.calculate_ha1:
                base = ALGORITHMS[pre.alg.base.upper()]
                return 0, calc_ha1(base, pre.cred.username, pre.realm, str(password))
            return 0, str(password).lower()
        return self.authorize(ctx, realm, header, get_ha1)

    @script_function("pv_www_authorize", Arg("str", "realm"), routes=(REQUEST_ROUTE,))
    def pv_www_authorize(self, ctx: MsgContext, realm: str) -> int:
        return self._pv_authorize(ctx, realm, WWW_AUTH)

    @script_function("pv_proxy_authorize", Arg("str", "realm"), routes=(REQUEST_ROUTE,))
    def pv_proxy_authorize(self, ctx: MsgContext, realm: str) -> int:
        return self._pv_authorize(ctx, realm, PROXY_AUTH)

    # --- RPID ------------------------------------------------------------------------------------------

    def _rpid(self, ctx: MsgContext) -> str | None:
        if self._rpid_avp is None:
            return None
        values = ctx.avps.get(self._rpid_avp)
        return str(values[0]) if values and values[0] is not None else None

    @script_function("is_rpid_user_e164", routes=(REQUEST_ROUTE,))
    def is_rpid_user_e164(self, ctx: MsgContext) -> int:
        rpid = self._rpid(ctx)
        if not rpid:
            return -1
        text = rpid.strip()
        if "<" in text:
            text = text[text.index("<") + 1:text.rindex(">")] if ">" in text else text
        try:
            user = parse_uri(text).user or ""
        except ParseError:
            return -1
        return 1 if _E164.match(user) else -1

    @script_function("append_rpid_hf", Arg("str", "prefix", optional=True),
                     Arg("str", "suffix", optional=True), routes=(REQUEST_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE))
    def append_rpid_hf(self, ctx: MsgContext, prefix: str | None = None, suffix: str | None = None) -> int:
        rpid = self._rpid(ctx)
        if not rpid or ctx.msg is None:
            return -1
        if prefix is None or suffix is None:
            prefix, suffix = str(self.param("rpid_prefix")), str(self.param("rpid_suffix"))
        try:
            ctx.msg.add_header("Remote-Party-ID", f"{prefix}{rpid}{suffix}")
        except ValueError as exc:
            log.error("append_rpid_hf: %s", exc)
            return -1
        return 1

    # --- pseudo-variables ($au & co.: OpenSIPS core ones, read from the credentials) -----------------

    @staticmethod
    def credentials_of(ctx: MsgContext) -> Credentials | None:
        """The credentials the $a* variables read: REGISTER's Authorization, else Proxy-Authorization
        (each falling back to the other), the first Digest line; None when none or malformed."""
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            return None
        order = (WWW_AUTH, PROXY_AUTH) if msg.method == "REGISTER" else (PROXY_AUTH, WWW_AUTH)
        for name in order:
            for value in msg.header_all(name):
                try:
                    cred = parse_credentials(value)
                except DigestParseError:
                    return None
                if cred is not None:
                    return cred
        return None

    def _cred_field(self, ctx: MsgContext, get: Callable[[Credentials], str | None]) -> str | None:
        cred = self.credentials_of(ctx)
        return get(cred) if cred is not None else None

    @pseudo_variable("au")
    def pv_au(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.user)

    @pseudo_variable("ad")
    def pv_ad(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.domain or None)

    @pseudo_variable("aU")
    def pv_aU(self, ctx: MsgContext, key: Any, index: Any) -> str | None:  # noqa: N802 - OpenSIPS's name
        return self._cred_field(ctx, lambda c: c.username)

    @pseudo_variable("ar")
    def pv_ar(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.realm)

    @pseudo_variable("an")
    def pv_an(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.nonce)

    @pseudo_variable("adu")
    def pv_adu(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.uri)

    @pseudo_variable("auth.nonce")
    def pv_auth_nonce(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.nonce)

    @pseudo_variable("auth.resp")
    def pv_auth_resp(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.response)

    @pseudo_variable("auth.opaque")
    def pv_auth_opaque(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.opaque)

    @pseudo_variable("auth.alg")
    def pv_auth_alg(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.algorithm)

    @pseudo_variable("auth.qop")
    def pv_auth_qop(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.qop)

    @pseudo_variable("auth.nc")
    def pv_auth_nc(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.nc)

    @pseudo_variable("auth.cnonce")
    def pv_auth_cnonce(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        return self._cred_field(ctx, lambda c: c.cnonce)


MODULE = AuthModule
