"""`routescript db subscriber add|passwd|rm URL USER@DOMAIN [PASSWORD]`: the subscriber table as
opensips-cli's `user add|password|delete` writes it (OpenSIPS 3.2+ tables, version 8):

    ha1            = MD5(username:domain:password)
    ha1_sha256     = SHA-256(username:domain:password)
    ha1_sha512t256 = SHA-512/256(username:domain:password)
    password       = the password only when asked (opensips-cli's plain_text_passwords), else ''

The realm of these HA1s is the domain: www_authorize("", ...) takes the realm from the request's
domain, which is what makes them match (a fixed realm argument needs HA1s made with that realm).
Unlike opensips-cli's `user password`, passwd rewrites the SHA-256 and SHA-512/256 hashes too.
"""

from __future__ import annotations

from dataclasses import dataclass

from routescript.db import open_database

from ..auth.digest import ALGORITHMS, calc_ha1

TABLE = "subscriber"
PASSWORD_SIZE = 25      # the password column is CHAR(25)/VARCHAR(25)
NAME_SIZE = 64


class SubscriberError(Exception):
    """What the command says before exiting 1."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Account:
        user, at, domain = text.partition("@")
        if not at or not user or not domain or "@" in domain:
            raise SubscriberError(f"{text!r}: expected USER@DOMAIN")
        if len(user) > NAME_SIZE or len(domain) > NAME_SIZE:
            raise SubscriberError(f"{text!r}: user and domain are at most {NAME_SIZE} characters each")
        if any(c.isspace() or ord(c) < 0x20 or c == ":" for c in user + domain):
            raise SubscriberError(f"{text!r}: no spaces, control characters or ':' in user or domain")
        return cls(user, domain)


def hashes(account: Account, password: str, *, plain_text: bool = False) -> dict[str, str]:
    """The columns add/passwd write."""
    if not password:
        raise SubscriberError("empty password")
    if plain_text and len(password) > PASSWORD_SIZE:
        raise SubscriberError(f"a plain-text password is at most {PASSWORD_SIZE} characters (the "
                              f"subscriber table's password column)")
    u, d = account.username, account.domain
    return {
        "ha1": calc_ha1(ALGORITHMS["MD5"], u, d, password),
        "ha1_sha256": calc_ha1(ALGORITHMS["SHA-256"], u, d, password),
        "ha1_sha512t256": calc_ha1(ALGORITHMS["SHA-512-256"], u, d, password),
        "password": password if plain_text else "",
    }


async def add(url: str, account: Account, password: str, *, plain_text: bool = False) -> None:
    values = hashes(account, password, plain_text=plain_text)
    async with await open_database(url) as db:
        await db.ensure_schema([TABLE])
        key = {"username": account.username, "domain": account.domain}
        if await db.count(TABLE, key):
            raise SubscriberError(f"subscriber {account.username}@{account.domain} exists already")
        await db.insert(TABLE, {**key, **values})


async def passwd(url: str, account: Account, password: str, *, plain_text: bool = False) -> None:
    values = hashes(account, password, plain_text=plain_text)
    async with await open_database(url) as db:
        await db.ensure_schema([TABLE])
        key = {"username": account.username, "domain": account.domain}
        if not await db.update(TABLE, key, values):
            raise SubscriberError(f"no subscriber {account.username}@{account.domain}")


async def remove(url: str, account: Account) -> None:
    async with await open_database(url) as db:
        await db.ensure_schema([TABLE])
        if not await db.delete(TABLE, {"username": account.username, "domain": account.domain}):
            raise SubscriberError(f"no subscriber {account.username}@{account.domain}")
