"""HTTP basic authentication for MI (mi_http): password hashes and the users table. No I/O here.

A password is stored as a scrypt hash (RFC 7914, Python's hashlib) in a self-describing text:

    $scrypt$n=16384,r=8,p=1$<salt, base64>$<key, base64>

`hash_password(password)` makes one (what `routescript hash-password` prints); `verify_password(password,
stored)` derives the key again and compares it with hmac.compare_digest (constant time). A users table
(`Users`) maps names to such hashes; `Users.check(name, password)` also spends one derivation for a
name it does not know, so the time of a refusal does not tell whether the name exists.

Basic credentials (RFC 7617): `parse_basic(header)` -> (user, password) or None.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

SCHEME = "scrypt"
# RFC 7914 section 2 / OWASP: N=2^14, r=8, p=1 costs ~16 MiB and tens of ms per derivation.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 1 << 14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
# Bounds on the cost a stored hash may ask for (a typo must not make every request take seconds).
MAX_N, MAX_R, MAX_P = 1 << 20, 32, 16
MAX_MEM = 256 << 20   # bytes hashlib.scrypt may use (128 * r * N plus a margin)
MAX_PASSWORD = 1024   # bytes of a password we derive a key from
MAX_USERS = 1000      # entries of one users table


class AuthConfigError(ValueError):
    """A stored hash or a users entry that cannot be used (a configuration error)."""


@dataclass(frozen=True, slots=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def derive(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode("utf-8"), salt=self.salt, n=self.n, r=self.r, p=self.p,
                              maxmem=MAX_MEM, dklen=len(self.key))

    def __str__(self) -> str:
        return f"${SCHEME}$n={self.n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_hash(text: str) -> ScryptHash:
    """`$scrypt$n=..,r=..,p=..$salt$key` -> ScryptHash; AuthConfigError saying what is wrong."""
    parts = text.strip().split("$")
    if len(parts) != 5 or parts[0] != "":
        raise AuthConfigError("a password hash looks like $scrypt$n=16384,r=8,p=1$SALT$KEY "
                              "(make one with `routescript hash-password`)")
    if parts[1] != SCHEME:
        raise AuthConfigError(f"unknown password hash scheme \"{parts[1]}\" (known: {SCHEME})")
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        salt, key = _unb64(parts[3]), _unb64(parts[4])
    except (ValueError, KeyError, binascii.Error):
        raise AuthConfigError("bad $scrypt$ hash: expected n=,r=,p= and base64 salt and key") from None
    if not (2 <= n <= MAX_N and n & (n - 1) == 0 and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise AuthConfigError(f"scrypt cost out of bounds: n a power of two up to {MAX_N}, r <= {MAX_R}, "
                              f"p <= {MAX_P}")
    if not salt or not 16 <= len(key) <= 64:
        raise AuthConfigError("bad $scrypt$ hash: empty salt or a key not of 16..64 bytes")
    return ScryptHash(n, r, p, salt, key)


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P,
                  salt: bytes | None = None) -> str:
    """A new `$scrypt$...` hash of `password` with a random salt."""
    if len(password.encode("utf-8")) > MAX_PASSWORD:
        raise ValueError(f"password longer than {MAX_PASSWORD} bytes")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    shape = ScryptHash(n, r, p, salt, b"\0" * KEY_BYTES)
    return str(ScryptHash(n, r, p, salt, shape.derive(password)))


def verify_password(password: str, stored: ScryptHash) -> bool:
    if len(password.encode("utf-8")) > MAX_PASSWORD:
        return False
    return hmac.compare_digest(stored.derive(password), stored.key)


# Spent on a name nobody has, so a refusal takes as long whether or not the name exists.
_UNKNOWN_USER = ScryptHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, b"routescript-none", b"\0" * KEY_BYTES)


class Users:
    """name -> ScryptHash, from `name:hash` entries (modparam values, lines of a file)."""

    def __init__(self) -> None:
        self._hashes: dict[str, ScryptHash] = {}

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def add_entry(self, entry: str, where: str) -> None:
        """One `name:$scrypt$...` entry; `where` names it in errors (a modparam, file:line)."""
        name, sep, text = entry.strip().partition(":")
        if not sep or not name or any(c.isspace() for c in name):
            raise AuthConfigError(f"{where}: expected name:$scrypt$..., got \"{entry.strip()[:40]}\"")
        if name in self._hashes:
            raise AuthConfigError(f"{where}: user \"{name}\" given twice")
        if len(self._hashes) >= MAX_USERS:
            raise AuthConfigError(f"{where}: more than {MAX_USERS} users")
        try:
            self._hashes[name] = parse_hash(text)
        except AuthConfigError as exc:
            raise AuthConfigError(f"{where}: user \"{name}\": {exc}") from None

    def add_file_text(self, text: str, path: str) -> None:
        """A users file: one `name:hash` a line; blank lines and `#` comments skipped."""
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                self.add_entry(line, f"{path}:{number}")

    def check(self, name: str, password: str) -> bool:
        """Whether name/password are right. Costs one scrypt derivation either way (call it off the loop)."""
        stored = self._hashes.get(name)
        ok = verify_password(password, stored if stored is not None else _UNKNOWN_USER)
        return ok and stored is not None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """RFC 7617: `Basic base64(user-id ":" password)` -> (user, password); None when absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token or len(token) > 4 * MAX_PASSWORD:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
