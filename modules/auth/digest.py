"""Digest authentication, sans-IO: the algorithms (RFC 7616, RFC 8760), the response computation and the
Authorization / Proxy-Authorization parser. No clock, no socket, no database: callers pass everything.

RFC 7616 section 3.4 (the credentials a UA sends), with RFC 3261 25.1 and RFC 8760 section 2:

    credentials      = "Digest" LWS digest-response
    digest-response  = dig-resp *(COMMA dig-resp)
    dig-resp         = username / realm / nonce / digest-uri / dresponse / algorithm / cnonce / opaque
                       / message-qop / nonce-count / auth-param
    username         = "username" EQUAL username-value          ; quoted-string
    realm            = "realm" EQUAL realm-value                ; quoted-string
    nonce            = "nonce" EQUAL nonce-value                ; quoted-string
    digest-uri       = "uri" EQUAL LDQUOT digest-uri-value RDQUOT
    dresponse        = "response" EQUAL request-digest          ; LDQUOT *LHEX RDQUOT (32 or 64 digits)
    algorithm        = "algorithm" EQUAL ( "MD5" / "MD5-sess" / "SHA-256" / "SHA-256-sess"
                       / "SHA-512-256" / "SHA-512-256-sess" / token )
    cnonce           = "cnonce" EQUAL cnonce-value              ; quoted-string
    opaque           = "opaque" EQUAL quoted-string
    message-qop      = "qop" EQUAL qop-value                    ; "auth" / "auth-int" / token
    nonce-count      = "nc" EQUAL nc-value                      ; 8LHEX
    auth-param       = auth-param-name EQUAL ( token / quoted-string )

What we accept beyond the letter (as OpenSIPS and the user agents in the field do): a quoted qop,
algorithm or nc value, and LWS around EQUAL and COMMA. What we refuse (DigestParseError, a 400):
a parameter given twice, a value that is neither token nor quoted-string, an unterminated quote,
control characters, `username*` / `userhash=true` (RFC 7616 3.4.4: we keep no user hashes), a header
over MAX_CREDENTIALS_LENGTH bytes or with more than MAX_PARAMS parameters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_CREDENTIALS_LENGTH = 4096   # bytes of one Authorization value: a digest answer is ~300 bytes
MAX_PARAMS = 32                 # parameters in one credentials value

# --- algorithms (RFC 7616 3.2, RFC 8760 2) ---------------------------------------------------------------


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str                       # as written in the algorithm parameter
    hash: Callable[[bytes], str]    # H(data) -> lower-case hex
    sess: bool                      # the "-sess" variant: HA1 = H(H(user:realm:pass):nonce:cnonce)
    bit: int                        # its bit in a nonce's "offered" mask
    strength: int                   # RFC 8760 order: the stronger challenge goes first
    hex_length: int                 # length of a response / HA1 in hex digits

    @property
    def base(self) -> str:
        """The hash's name without -sess: it selects the HA1 column (auth_db)."""
        return self.name[:-5] if self.sess else self.name


ALGORITHMS: dict[str, Algorithm] = {a.name.upper(): a for a in (
    Algorithm("MD5", _md5, False, 0x01, 1, 32),
    Algorithm("MD5-sess", _md5, True, 0x02, 0, 32),
    Algorithm("SHA-256", _sha256, False, 0x04, 3, 64),
    Algorithm("SHA-256-sess", _sha256, True, 0x08, 2, 64),
    Algorithm("SHA-512-256", _sha512_256, False, 0x10, 5, 64),
    Algorithm("SHA-512-256-sess", _sha512_256, True, 0x20, 4, 64),
)}
MD5 = ALGORITHMS["MD5"]

QOP_AUTH = 0x40        # bits of the "offered" mask a nonce carries, beside the algorithms'
QOP_AUTH_INT = 0x80


def algorithm(name: str | None) -> Algorithm | None:
    """The algorithm named in credentials (case-insensitive; absent = MD5, RFC 7616 3.4), None if unknown."""
    if name is None:
        return MD5
    return ALGORITHMS.get(name.upper())


def parse_algorithms(text: str | None) -> tuple[Algorithm, ...]:
    """www_challenge's `algorithms`: a comma list, any order, strongest first in the result (RFC 8760 2.4).
    Empty or absent: MD5 only (OpenSIPS: compatibility with pre-RFC 8760 UACs). ValueError when unknown."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        return (MD5,)
    found: dict[str, Algorithm] = {}
    for name in names:
        alg = ALGORITHMS.get(name.upper())
        if alg is None:
            raise ValueError(f"unknown digest algorithm {name!r} (one of "
                             f"{', '.join(a.name for a in ALGORITHMS.values())})")
        found[alg.name] = alg
    return tuple(sorted(found.values(), key=lambda a: -a.strength))


def parse_qop(text: str | None) -> int:
    """www_challenge's `qop`: "auth", "auth-int" or both, comma separated; empty/absent = no qop (0).
    Returns the QOP_* bits; ValueError for anything else (OpenSIPS before 3.0 took 0/1 here)."""
    bits = 0
    for part in (text or "").split(","):
        word = part.strip().lower()
        if not word:
            continue
        if word == "auth":
            bits |= QOP_AUTH
        elif word == "auth-int":
            bits |= QOP_AUTH_INT
        else:
            raise ValueError(f"qop {text!r}: expected \"auth\", \"auth-int\" or \"auth,auth-int\"")
    return bits


def qop_text(bits: int) -> str | None:
    words = [w for bit, w in ((QOP_AUTH, "auth"), (QOP_AUTH_INT, "auth-int")) if bits & bit]
    return ",".join(words) or None


# --- computing (RFC 7616 3.4.1 - 3.4.3) -------------------------------------------------------------------

def calc_ha1(alg: Algorithm, username: str, realm: str, password: str) -> str:
    """H(username ":" realm ":" password): what the subscriber table's ha1 columns hold."""
    return alg.hash(f"{username}:{realm}:{password}".encode())


def session_ha1(alg: Algorithm, ha1: str, nonce: str, cnonce: str) -> str:
    """For -sess: H(H(username:realm:password) ":" nonce ":" cnonce); else ha1 itself."""
    if not alg.sess:
        return ha1
    return alg.hash(f"{ha1.lower()}:{nonce}:{cnonce}".encode())


def calc_response(alg: Algorithm, ha1: str, *, nonce: str, method: str, uri: str, qop: str | None = None,
                  nc: str = "", cnonce: str = "", body: bytes = b"") -> str:
    """The request-digest for HA1 `ha1` (already the session HA1 for -sess: see session_ha1).

    A2 = method ":" uri (qop auth or none), method ":" uri ":" H(body) (auth-int);
    response = KD(HA1, nonce:nc:cnonce:qop:H(A2)) with qop, H(HA1:nonce:H(A2)) without (RFC 2069)."""
    if qop == "auth-int":
        ha2 = alg.hash(f"{method}:{uri}:{alg.hash(body)}".encode())
    else:
        ha2 = alg.hash(f"{method}:{uri}".encode())
    if qop:
        return alg.hash(f"{ha1.lower()}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return alg.hash(f"{ha1.lower()}:{nonce}:{ha2}".encode())


# --- credentials: the parser --------------------------------------------------------------------------

class DigestParseError(ValueError):
    """Credentials that break the grammar: the peer's fault, answered 400 `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credentials:
    """One parsed Digest Authorization / Proxy-Authorization value. Values are unquoted."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None

    @property
    def user(self) -> str:
        """The user part of username ($au): before the first '@' when it holds one."""
        return self.username.partition("@")[0]

    @property
    def domain(self) -> str:
        """The domain part of username ($ad): after the first '@', else ""."""
        return self.username.partition("@")[2]


# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - a grammar rule, not a password
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE; qdtext = LWS / %x21 / %x23-5B / %x5D-7E /
# UTF8-NONASCII; quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F) - we refuse the control characters
_QUOTED = r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"'
_LWS = r"[ \t]*"
_PARAM = re.compile(rf"{_LWS}({_TOKEN}){_LWS}={_LWS}(?:{_QUOTED}|({_TOKEN})){_LWS}(,|\Z)")
_SCHEME = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]+|\Z)")
_UNESCAPE = re.compile(r"\\(.)")
_LHEX = re.compile(r"[0-9a-fA-F]+\Z")
_NC = re.compile(r"[0-9a-fA-F]{8}\Z")

_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def parse_credentials(value: str) -> Credentials | None:
    """Parse one Authorization / Proxy-Authorization value. None when its scheme is not Digest (another
    scheme's credentials are not ours: OpenSIPS skips them too); DigestParseError when it is Digest and
    breaks the grammar above or lacks a required parameter (RFC 7616 3.4: username, realm, nonce, uri,
    response; cnonce and nc with qop)."""
    if len(value) > MAX_CREDENTIALS_LENGTH:
        raise DigestParseError("Authorization header too long")
    scheme = _SCHEME.match(value)
    if scheme is None:
        raise DigestParseError("Bad Authorization header")
    if scheme.group(1).lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = scheme.end()
    if pos >= len(value) or not value[pos:].strip():
        raise DigestParseError("Empty Digest credentials")
    while pos < len(value):
        m = _PARAM.match(value, pos)
        if m is None:
            raise DigestParseError("Bad Digest credentials")
        name = m.group(1).lower()
        quoted, token = m.group(2), m.group(3)
        text = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else token
        if name in params:
            raise DigestParseError(f"Digest parameter {name} given twice")
        if len(params) >= MAX_PARAMS:
            raise DigestParseError("Too many Digest parameters")
        params[name] = text
        pos = m.end()
        if m.group(4) == "," and not value[pos:].strip():
            raise DigestParseError("Bad Digest credentials")   # a trailing comma
    for name in _REQUIRED:
        if name not in params:
            raise DigestParseError(f"Digest credentials without {name}")
    if "username*" in params or params.get("userhash", "false").lower() == "true":
        raise DigestParseError("Digest userhash/username* not supported")
    qop = params.get("qop")
    if qop is not None:
        qop = qop.lower()
        if qop not in ("auth", "auth-int"):
            raise DigestParseError("Bad Digest qop")
        if "cnonce" not in params or "nc" not in params:
            raise DigestParseError("Digest qop without cnonce or nc")
        if not _NC.match(params["nc"]):
            raise DigestParseError("Bad Digest nc")
    if not _LHEX.match(params["response"]) or len(params["response"]) not in (32, 64):
        raise DigestParseError("Bad Digest response")
    return Credentials(username=params["username"], realm=params["realm"], nonce=params["nonce"],
                       uri=params["uri"], response=params["response"].lower(),
                       algorithm=params.get("algorithm"), cnonce=params.get("cnonce"),
                       opaque=params.get("opaque"), qop=qop, nc=params.get("nc"))


# --- challenges (RFC 7616 3.3) --------------------------------------------------------------------------

def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge_values(realm: str, nonce: str, opaque: str, qop_bits: int, algorithms: tuple[Algorithm, ...],
                     stale: bool = False) -> list[str]:
    """One WWW-/Proxy-Authenticate value per algorithm, strongest first (RFC 8760 2.4), all with the
    same nonce (the UA answers one of them)."""
    qop = qop_text(qop_bits)
    out = []
    for alg in algorithms:
        parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}", f"opaque={_quote(opaque)}"]
        if stale:
            parts.append("stale=true")
        if qop:
            parts.append(f"qop={_quote(qop)}")
        parts.append(f"algorithm={alg.name}")
        out.append(", ".join(parts))
    return out
