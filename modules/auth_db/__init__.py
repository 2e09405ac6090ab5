"""auth_db - digest authentication against OpenSIPS's `subscriber` table (OpenSIPS 3.4 auth_db module).
docs/modules/auth_db.md lists every parameter and function, and where we differ.

www_authorize(realm, table) / proxy_authorize(realm, table) run the auth module's steps (pre_auth,
check_response, post_auth) with the HA1 read from the table: with calculate_ha1 = 0 the column of the
algorithm the UA answered with (password_column for MD5, hash_column_sha256, hash_column_sha512t256),
with calculate_ha1 = 1 the plain-text password in password_column, hashed here. load_credentials copies
columns of the subscriber's row into AVPs after a successful authorization. db_does_uri_exist(uri,
table) looks a user up. Return codes are OpenSIPS's (modules/auth: -5 .. -1, 1).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from routescript.core.module import Arg, ConfigError, Module, Param, script_function
from routescript.db import Database, DatabaseError
from routescript.db.schema import SUBSCRIBER
from routescript.db.url import check_db_url
from routescript.script.context import FAILURE_ROUTE, LOCAL_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, parse_uri

from ..auth import (
    AUTH_ERROR,
    PROXY_AUTH,
    USER_UNKNOWN,
    WWW_AUTH,
    AuthModule,
    PreAuth,
)
from ..auth.digest import ALGORITHMS, calc_ha1

log = logging.getLogger("routescript.auth_db")

TABLE = "subscriber"
_CREDENTIAL = re.compile(r"\s*(?:\$avp\(([A-Za-z0-9_.\-]+)\)\s*=\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\Z")


def _column(v: Any) -> None:
    if str(v) not in SUBSCRIBER.by_name or str(v) == "id":
        raise ValueError(f"{v!r} is not a column of OpenSIPS's subscriber table (one of "
                         f"{', '.join(c for c in SUBSCRIBER.column_names if c != 'id')}): routescript reads "
                         f"the table through its schema, so other column names are not supported")


def _bool(v: Any) -> None:
    if int(v) not in (0, 1):
        raise ValueError("must be 0 or 1")


def parse_load_credentials(text: str) -> tuple[tuple[str, str], ...]:
    """load_credentials = credential *(";" credential); credential = [avp_spec "="] column_name ->
    ((avp name, column), ...). ValueError when a part is malformed or not a subscriber column."""
    out = []
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        m = _CREDENTIAL.match(part)
        if m is None:
            raise ValueError(f"load_credentials: bad credential {part.strip()!r} (expected \"column\" or "
                             f"\"$avp(name)=column\")")
        column = m.group(2)
        _column(column)
        out.append((m.group(1) or column, column))
    return tuple(out)


def _check_load_credentials(v: Any) -> None:
    parse_load_credentials(str(v))


def _fix_table(v: Any) -> Any:
    if str(v) != TABLE:
        raise ValueError(f"table {v!r}: routescript authenticates against OpenSIPS's \"{TABLE}\" table "
                         f"(another table name is not supported)")
    return str(v)


class AuthDbModule(Module):
    name = "auth_db"
    db_url_from_default = "db_url"   # OpenSIPS: init_db_url(db_url, ...)
    depends = ("auth",)
    params = (
        Param("db_url", str, None, "database URL (default: db_default_url)", check=check_db_url),
        Param("calculate_ha1", int, 0, "1: password_column holds plain-text passwords", check=_bool),
        Param("use_domain", int, 0, "1: the domain column is part of the user lookup", check=_bool),
        Param("load_credentials", str, "", "columns copied into AVPs after authorization",
              check=_check_load_credentials),
        Param("skip_version_check", int, 0, "1: do not check the subscriber table's version", check=_bool),
        Param("user_column", str, "username", "column of the user names", check=_column),
        Param("domain_column", str, "domain", "column of the domains", check=_column),
        Param("password_column", str, "ha1", "column of the MD5 HA1 (or of the password: calculate_ha1)",
              check=_column),
        Param("hash_column_sha256", str, "ha1_sha256", "column of the SHA-256 HA1", check=_column),
        Param("hash_column_sha512t256", str, "ha1_sha512t256", "column of the SHA-512/256 HA1",
              check=_column),
        # the 'uri' table of db_is_to_authorized & co. is not built: their columns keep their defaults
        Param("uri_user_column", str, "username", "uri table column", later="the uri table is not built"),
        Param("uri_domain_column", str, "domain", "uri table column", later="the uri table is not built"),
        Param("uri_uriuser_column", str, "uri_user", "uri table column", later="the uri table is not built"),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.calculate_ha1 = bool(int(self.param("calculate_ha1")))
        self.use_domain = bool(int(self.param("use_domain")))
        self.credentials = parse_load_credentials(str(self.param("load_credentials") or ""))
        self.user_column = str(self.param("user_column"))
        self.domain_column = str(self.param("domain_column"))
        self.columns = {"MD5": str(self.param("password_column")),
                        "SHA-256": str(self.param("hash_column_sha256")),
                        "SHA-512-256": str(self.param("hash_column_sha512t256"))}
        self.db: Database | None = None
        self.url = str(self.param("db_url") or server.config.get("db_default_url") or "")
        if not self.url:
            why = ("auth_db has no database: set modparam(\"auth_db\", \"db_url\", ...) or db_default_url")
            for fn in ("www_authorize", "proxy_authorize", "db_does_uri_exist"):
                self.refused[fn] = why
        uri_table = "the 'uri' table (URI/authentication-id mappings) is not built in routescript"
        for fn in ("db_is_to_authorized", "db_is_from_authorized", "db_get_auth_id"):
            self.refused[fn] = uri_table

    def check(self) -> None:
        try:
            check_db_url(self.url)
        except ValueError as exc:
            raise ConfigError(f"auth_db db_url: {exc}") from None

    async def start(self) -> None:
        if not self.url:
            return
        self.db = await self.server.database(self.url)
        if not int(self.param("skip_version_check")):
            # creates an empty subscriber table when there is none; refuses an older version, naming
            # `routescript db init` (OpenSIPS refuses to start on a version mismatch too)
            await self.db.ensure_schema([TABLE])

    def _auth(self) -> AuthModule:
        auth = self.server.modules.get("auth")
        assert isinstance(auth, AuthModule), "auth_db depends on auth"
        return auth

    async def _row(self, user: str, domain: str, columns: list[str]) -> dict[str, Any] | None:
        assert self.db is not None
        where: dict[str, Any] = {self.user_column: user}
        if self.use_domain:
            where[self.domain_column] = domain
        rows = await self.db.query(TABLE, where=where, columns=columns, limit=2)
        if len(rows) > 1:
            # OpenSIPS: "multiple matching rows" is treated as an unknown user
            log.error("auth_db: %d rows for user %s (domain %s): use_domain is off?", len(rows), user, domain)
            return None
        return rows[0] if rows else None

    async def _authorize(self, ctx: MsgContext, realm: str, table: str, header: str) -> int:
        if table != TABLE:
            log.error("auth_db: table %r is not supported (only %r)", table, TABLE)
            return AUTH_ERROR
        auth = self._auth()
        pre = auth.pre_auth(ctx, realm, header)
        if pre.code:
            return pre.code
        assert pre.cred is not None and pre.alg is not None
        # plain text (calculate_ha1): password_column for every algorithm; else the algorithm's HA1 column
        column = self.columns["MD5" if self.calculate_ha1 else pre.alg.base]
        wanted = [column, *(c for _, c in self.credentials if c != column)]
        domain = pre.cred.domain or pre.realm
        try:
            row = await self._row(pre.cred.user, domain, wanted)
        except DatabaseError as exc:
            log.error("auth_db: cannot read the subscriber table: %s", exc)
            return AUTH_ERROR
        if row is None:
            log.info("auth_db: no subscriber %s (realm %s)", pre.cred.username, pre.realm)
            return USER_UNKNOWN
        secret = row.get(column)
        if not secret:
            log.info("auth_db: subscriber %s has an empty %s column", pre.cred.username, column)
            return USER_UNKNOWN
        ha1 = (calc_ha1(ALGORITHMS[pre.alg.base.upper()], pre.cred.username, pre.realm, str(secret))
               if self.calculate_ha1 else str(secret).strip().lower())
        code = self._finish(ctx, auth, pre, ha1)
        if code == 1:
            for avp, col in self.credentials:
                value = row.get(col)
                if value is not None:
                    ctx.avps.setdefault(avp, []).insert(0, value)
        return code

    @staticmethod
    def _finish(ctx: MsgContext, auth: AuthModule, pre: PreAuth, ha1: str) -> int:
        assert pre.cred is not None
        if not auth.check_response(ctx, pre, ha1):
            log.info("auth_db: wrong password for %s (realm %s)", pre.cred.username, pre.realm)
            return -2
        return auth.post_auth(ctx, pre)

    @script_function("www_authorize", Arg("str", "realm"), Arg("str", "table", fixup=_fix_table),
                     routes=(REQUEST_ROUTE,))
    async def www_authorize(self, ctx: MsgContext, realm: str, table: str) -> int:
        return await self._authorize(ctx, realm, table, WWW_AUTH)

    @script_function("proxy_authorize", Arg("str", "realm"), Arg("str", "table", fixup=_fix_table),
                     routes=(REQUEST_ROUTE,))
    async def proxy_authorize(self, ctx: MsgContext, realm: str, table: str) -> int:
        return await self._authorize(ctx, realm, table, PROXY_AUTH)

    @script_function("db_does_uri_exist", Arg("str", "uri"), Arg("str", "table", fixup=_fix_table),
                     routes=(REQUEST_ROUTE,))
    async def db_does_uri_exist(self, ctx: MsgContext, uri: str, table: str) -> int:
        """1 when user@domain of `uri` is a subscriber (domain compared only with use_domain), else -1;
        -2 for a URI without user or a database error (OpenSIPS: an error is a negative code too)."""
        if table != TABLE:
            log.error("db_does_uri_exist: table %r is not supported (only %r)", table, TABLE)
            return -2
        try:
            parsed = parse_uri(uri)
        except ParseError:
            log.error("db_does_uri_exist: bad URI %r", uri)
            return -2
        if not parsed.user:
            return -2
        try:
            row = await self._row(parsed.user, (parsed.host or "").lower(), [self.user_column])
        except DatabaseError as exc:
            log.error("db_does_uri_exist: cannot read the subscriber table: %s", exc)
            return -2
        return 1 if row is not None else -1

    # refused at load (self.refused): declared so scripts get that message, not "unknown function"
    @script_function("db_is_to_authorized", Arg("str", "table"), routes=(REQUEST_ROUTE,))
    def db_is_to_authorized(self, ctx: MsgContext, table: str) -> int:
        return -1

    @script_function("db_is_from_authorized", Arg("str", "table"), routes=(REQUEST_ROUTE,))
    def db_is_from_authorized(self, ctx: MsgContext, table: str) -> int:
        return -1

    @script_function("db_get_auth_id", Arg("str", "table"), Arg("str", "uri"), Arg("pvar", "auth"),
                     Arg("pvar", "realm"), routes=(REQUEST_ROUTE, FAILURE_ROUTE, LOCAL_ROUTE))
    def db_get_auth_id(self, ctx: MsgContext, table: str, uri: str, auth: Any, realm: Any) -> int:
        return -1


MODULE = AuthDbModule
