"""Rows of OpenSIPS's presentity and active_watchers tables <-> Publication and Subscription.

The mappers are pure; `PresenceStore` is the thin async layer over a routescript.db Database. Column
meanings are OpenSIPS 3.4's, so a database OpenSIPS wrote is read as it is (and the other way round).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from routescript.db import Database, GroupCommitter, Write

from .presentity import Publication
from .subscription import Subscription, SubState, dialog_key, shared

PRESENTITY = "presentity"
ACTIVE_WATCHERS = "active_watchers"
WATCHERS = "watchers"
FORCED_REASON = "forced"   # active_watchers.reason of an active handle_subscribe("1") subscription


def split_pres_uri(uri: str) -> tuple[str, str]:
    """"sip:user@domain" -> ("user", "domain") (OpenSIPS keeps them apart in presentity)."""
    rest = uri.split(":", 1)[1] if ":" in uri.split("@", 1)[0] else uri
    user, at, domain = rest.partition("@")
    return (user, domain) if at else ("", user)


def join_pres_uri(user: str, domain: str) -> str:
    """OpenSIPS's uandd_to_uri."""
    return f"sip:{user}@{domain}" if user else f"sip:{domain}"


# A presentity's (user, domain) as the presentity table keeps them: the PUBLISH handler passes the ones
# it read from the Request-URI; without them they are split from the publication's URI.
Address = tuple[str, str]


def publication_row(pub: Publication, address: Address | None = None) -> dict[str, Any]:
    user, domain = address or split_pres_uri(pub.pres_uri)
    return {"username": user, "domain": domain, "event": pub.event, "etag": pub.etag,
            "expires": int(pub.expires_at), "received_time": int(pub.received_time), "body": pub.body,
            "extra_hdrs": b"", "sender": pub.sender}


def publication_from_row(row: dict[str, Any], content_type: str) -> Publication:
    body = row.get("body") or b""
    return Publication(shared(join_pres_uri(row["username"], row["domain"])), shared(row["event"]),
                       row["etag"], float(row["expires"]), bytes(body), shared(content_type),
                       float(row.get("received_time") or 0),
                       row.get("sender") or None)


def publication_key(pres_uri: str, event: str, etag: str, address: Address | None = None) -> dict[str, Any]:
    user, domain = address or split_pres_uri(pres_uri)
    return {"username": user, "domain": domain, "event": event, "etag": etag}


def subscription_row(sub: Subscription) -> dict[str, Any]:
    return {
        "presentity_uri": sub.pres_uri, "watcher_username": sub.watcher_user,
        "watcher_domain": sub.watcher_domain, "to_user": sub.to_user, "to_domain": sub.to_domain,
        "event": sub.event, "event_id": sub.event_id, "to_tag": sub.to_tag, "from_tag": sub.from_tag,
        "callid": sub.callid, "local_cseq": sub.local_cseq, "remote_cseq": sub.remote_cseq,
        "contact": sub.contact, "record_route": ", ".join(sub.record_route) or None,
        "expires": int(sub.expires_at), "status": int(sub.status),
        "reason": FORCED_REASON if sub.forced and sub.status is SubState.ACTIVE else sub.reason,
        "version": sub.version, "socket_info": sub.socket_info, "local_contact": sub.local_contact,
    }


# active_watchers' unique key (OpenSIPS's active_watchers_idx)
SUBSCRIPTION_KEY = ("presentity_uri", "callid", "to_tag", "from_tag")


def subscription_key(sub: Subscription) -> dict[str, Any]:
    return {"presentity_uri": sub.pres_uri, "callid": sub.callid, "to_tag": sub.to_tag,
            "from_tag": sub.from_tag}


def subscription_from_row(row: dict[str, Any]) -> Subscription:
    from routescript.sip import split_values

    status = int(row.get("status") or SubState.PENDING)
    forced = status == SubState.ACTIVE and row.get("reason") == FORCED_REASON
    return Subscription(
        pres_uri=shared(row["presentity_uri"]), event=shared(row["event"]), to_user=row.get("to_user") or "",
        to_domain=shared(row.get("to_domain") or ""), watcher_user=row.get("watcher_username") or "",
        watcher_domain=shared(row.get("watcher_domain") or ""), callid=row["callid"], to_tag=row["to_tag"],
        from_tag=row["from_tag"], contact=row["contact"], expires_at=float(row["expires"]),
        status=SubState(status) if status in SubState._value2member_map_ else SubState.PENDING,
        reason=row.get("reason") or None, event_id=row.get("event_id") or None,
        local_cseq=int(row.get("local_cseq") or 0), remote_cseq=int(row.get("remote_cseq") or 0),
        record_route=tuple(split_values(row.get("record_route") or "")), version=int(row.get("version") or 0),
        socket_info=shared(row.get("socket_info") or ""),
        local_contact=shared(row.get("local_contact") or ""), forced=forced,
        key=dialog_key(row["callid"], row["to_tag"], row["from_tag"]))


class PresenceStore:
    """The presence tables in one routescript.db Database.

    sharing_tag: this node's id when presence is clustered (docs/cluster.md): new active_watchers rows
    carry it, and every read, update and delete of active_watchers is limited to the rows carrying it
    (fencing: once another node adopted a row, this node can no longer change it). None: one server,
    every row is ours."""

    def __init__(self, db: Database, sharing_tag: str | None = None) -> None:
        self.db = db
        self.sharing_tag = sharing_tag
        self.committer = GroupCommitter(db)

    def _own(self, where: dict[str, Any]) -> dict[str, Any]:
        """`where` limited to this node's subscriptions when clustered."""
        if self.sharing_tag is not None:
            where["sharing_tag"] = self.sharing_tag
        return where

    # PUBLISH writes go through group commit: the PUBLISHes handled at the same moment share one
    # transaction (one sync to disk), and each is acknowledged only once that transaction committed.
    # These return the committer's awaitable rather than awaiting it in a coroutine of their own: the
    # caller waits on the commit directly (one frame less to resume when it completes).
    # `address`: the presentity's (user, domain) when the caller has them (else split from its URI).
    # `on_commit`: called as the change commits, before the caller resumes (GroupCommitter.write).
    def insert_publication(self, pub: Publication, address: Address | None = None,
                           on_commit: Callable[[], None] | None = None) -> Awaitable[None]:
        return self.committer.write((Write("insert", PRESENTITY, publication_row(pub, address)),), on_commit)

    def replace_publication(self, old_etag: str, pub: Publication, address: Address | None = None,
                            on_commit: Callable[[], None] | None = None) -> Awaitable[None]:
        address = address or split_pres_uri(pub.pres_uri)
        values = publication_row(pub, address)
        for k in ("username", "domain", "event"):
            del values[k]
        return self.committer.write((Write("update", PRESENTITY, values,
                                           publication_key(pub.pres_uri, pub.event, old_etag, address)),),
                                    on_commit)

    def delete_publication(self, pub: Publication, address: Address | None = None,
                           on_commit: Callable[[], None] | None = None) -> Awaitable[None]:
        where = publication_key(pub.pres_uri, pub.event, pub.etag, address)
        return self.committer.write((Write("delete", PRESENTITY, where=where),), on_commit)

    async def delete_publications(self, pubs: Iterable[Publication]) -> None:
        pubs = list(pubs)
        if not pubs:
            return
        await self.db.write_batch([Write("delete", PRESENTITY,
                                         where=publication_key(p.pres_uri, p.event, p.etag)) for p in pubs])

    # A new subscription and an unsubscribe go through group commit too: their 2xx says they are stored
    # (a refresh or a NOTIFY's CSeq waits for the db_update_period sync).
    def insert_subscription(self, sub: Subscription) -> Awaitable[None]:
        return self.committer.write((Write("upsert", ACTIVE_WATCHERS, self._tagged(subscription_row(sub)),
                                           keys=SUBSCRIPTION_KEY),))

    def update_subscription(self, sub: Subscription) -> Awaitable[None]:
        """A refresh committed before its 2xx (worker processes: docs/workers.md section 3)."""
        key = subscription_key(sub)
        values = {k: v for k, v in subscription_row(sub).items() if k not in key}
        return self.committer.write((Write("update", ACTIVE_WATCHERS, values, self._own(key)),))

    def delete_subscription(self, sub: Subscription) -> Awaitable[None]:
        where = self._own(subscription_key(sub))
        return self.committer.write((Write("delete", ACTIVE_WATCHERS, where=where),))

    def _tagged(self, row: dict[str, Any]) -> dict[str, Any]:
        """A new active_watchers row, carrying this node's sharing tag when clustered."""
        if self.sharing_tag is not None:
            row["sharing_tag"] = self.sharing_tag
        return row

    async def live_publications(self, now: float) -> list[dict[str, Any]]:
        return await self.db.query(PRESENTITY, {"expires": (">", int(now))}, order_by="received_time")

    async def live_publications_page(self, now: float, event: str, after_id: int,
                                     limit: int) -> list[dict[str, Any]]:
        """Live rows of one event with id > after_id, by id, at most `limit` (pres_expose reads the table
        a page at a time: its memory is one page, however large the table)."""
        where = {"event": event, "expires": (">", int(now)), "id": (">", after_id)}
        return await self.db.query(PRESENTITY, where, order_by="id", limit=limit)

    async def sync_subscriptions(self, inserts: list[Subscription], updates: list[Subscription],
                                 deletes: list[Subscription]) -> list[Subscription]:
        """One db_update_period flush, in one transaction. Returns the updated subscriptions whose row
        is no longer ours (clustered: another node took them over; or deleted by hand) - the caller
        forgets them."""
        if not (inserts or updates or deletes):
            return []
        lost = []
        async with self.db.transaction():
            for sub in deletes:
                await self.db.delete(ACTIVE_WATCHERS, self._own(subscription_key(sub)))
            for sub in inserts:
                await self.db.upsert(ACTIVE_WATCHERS, self._tagged(subscription_row(sub)), SUBSCRIPTION_KEY)
            for sub in updates:
                row = subscription_row(sub)
                key = subscription_key(sub)
                n = await self.db.update(ACTIVE_WATCHERS, self._own(dict(key)),
                                         {k: v for k, v in row.items() if k not in key})
                if n == 0:
                    lost.append(sub)
        return lost

    async def live_subscriptions(self, now: float) -> list[dict[str, Any]]:
        """The live subscriptions to load at start (clustered: this node's only)."""
        return await self.db.query(ACTIVE_WATCHERS, self._own({"expires": (">", int(now))}), order_by="id")

    async def own_subscription_rows(self) -> list[dict[str, Any]]:
        """Every row this node owns, live or not (to reload after the cluster took ours away)."""
        rows: list[dict[str, Any]] = await self.db.query(ACTIVE_WATCHERS, self._own({}), order_by="id")
        return rows

    async def claim_expired_publications(self, now: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Delete up to `limit` expired presentity rows and return them; with several servers on one
        database each row goes to exactly one of them (FOR UPDATE SKIP LOCKED), which tells the others."""
        rows: list[dict[str, Any]] = await self.db.claim_delete(PRESENTITY, {"expires": ("<=", int(now))},
                                                                limit=limit, order_by="expires")
        return rows

    # --- fallback2db lookups: what another server sharing the database stored ------------------
    async def find_publications(self, pres_uri: str, event: str, now: float) -> list[dict[str, Any]]:
        """The live publications of one presentity for one event."""
        user, domain = split_pres_uri(pres_uri)
        return await self.db.query(PRESENTITY, {"username": user, "domain": domain, "event": event,
                                                "expires": (">", int(now))}, order_by="received_time")

    async def find_subscription(self, callid: str, to_tag: str, from_tag: str) -> dict[str, Any] | None:
        """One subscription dialog by its identifiers (RFC 3261 12: Call-ID and both tags)."""
        rows = await self.db.query(ACTIVE_WATCHERS,
                                   {"callid": callid, "to_tag": to_tag, "from_tag": from_tag}, limit=1)
        return rows[0] if rows else None

    async def find_subscriptions(self, pres_uri: str, event: str, now: float) -> list[dict[str, Any]]:
        """The live subscriptions to one presentity for one event."""
        return await self.db.query(ACTIVE_WATCHERS, {"presentity_uri": pres_uri, "event": event,
                                                     "expires": (">", int(now))}, order_by="id")

    # --- the watchers table: the authorization decision per (presentity, watcher, event) -----------
    # OpenSIPS keeps it apart from active_watchers so the decision outlives the subscription dialog:
    # a new SUBSCRIBE of the same watcher reuses it (no rules evaluation), and a pending watcher stays
    # visible to the presentity for waiting_subs_daysno days.
    async def find_watcher_auth(self, pres_uri: str, watcher_user: str, watcher_domain: str,
                                event: str) -> dict[str, Any] | None:
        rows = await self.db.query(WATCHERS, {"presentity_uri": pres_uri, "watcher_username": watcher_user,
                                              "watcher_domain": watcher_domain, "event": event}, limit=1)
        return rows[0] if rows else None

    async def save_watcher_auth(self, pres_uri: str, watcher_user: str, watcher_domain: str, event: str,
                                status: int, reason: str | None, now: float) -> None:
        await self.db.upsert(WATCHERS, {"presentity_uri": pres_uri, "watcher_username": watcher_user,
                                        "watcher_domain": watcher_domain, "event": event, "status": status,
                                        "reason": reason, "inserted_time": int(now)},
                             ("presentity_uri", "watcher_username", "watcher_domain", "event"))

    async def update_watcher_auth(self, row_id: int, status: int, reason: str | None) -> None:
        await self.db.update(WATCHERS, {"id": row_id}, {"status": status, "reason": reason})

    async def delete_watcher_auth(self, row_id: int) -> None:
        await self.db.delete(WATCHERS, {"id": row_id})

    async def watchers_of(self, pres_uri: str, event: str) -> list[dict[str, Any]]:
        return await self.db.query(WATCHERS, {"presentity_uri": pres_uri, "event": event}, order_by="id")

    async def forget_allowed(self, watchers: Iterable[tuple[str, str, str, str]]) -> None:
        """The allowed (active) decisions of these (presentity, watcher user, watcher domain, event),
        whose subscriptions have ended, are forgotten; pending and blocked ones stay (waiting_subs_daysno,
        refreshWatchers)."""
        writes = [Write("delete", WATCHERS, where={"presentity_uri": p, "watcher_username": u,
                                                   "watcher_domain": d, "event": e,
                                                   "status": int(SubState.ACTIVE)})
                  for p, u, d, e in watchers]
        if writes:
            await self.db.write_batch(writes)

    async def delete_old_waiting(self, before: float, statuses: Iterable[int]) -> int:
        """waiting_subs_daysno: pending/waiting decisions inserted before `before` are forgotten."""
        return await self.db.delete(WATCHERS, {"status": ("in", list(statuses)),
                                               "inserted_time": ("<", int(before))})

    async def delete_expired(self, now: float) -> None:
        await self.db.delete(PRESENTITY, {"expires": ("<=", int(now))})
        await self.db.delete(ACTIVE_WATCHERS, self._own({"expires": ("<=", int(now))}))
