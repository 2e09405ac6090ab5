"""The presence module run as worker node w<slot> (PresenceModule.run_as_worker) on SQLite: the node, its
membership, adoption, resync, and the state its watchers hear after a restart of the slot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from routescript.db import Database, open_database
from routescript.modules.presence.membership import SupervisedMembership, WorkerIdentity
from routescript.modules.presence_xml import PresenceXmlModule
from routescript.testing.presence_doubles import PresenceCtx, PresenceServer

from .worker_nodes import WATCHER_SRC, slot_tag_prefix, subscribe


class ModuleHost(PresenceServer):
    """PresenceServer plus what PresenceModule.start uses of the server."""

    def __init__(self, slot: int | None) -> None:
        super().__init__(tag_prefix=slot_tag_prefix(slot))
        from routescript.core.stats import Statistics

        self.statistics = Statistics()
        self.dbs: list[Database] = []

    async def database(self, url: str) -> Database:
        db = await open_database(url)
        self.dbs.append(db)
        return db


def module_params(**over: Any) -> dict[str, Any]:
    from routescript.modules.presence import PresenceModule

    timers_off = {"clean_period": 0, "db_update_period": 0}
    return {p.name: p.default for p in PresenceModule.params} | timers_off | over


def xml_events() -> list[Any]:
    defaults = {p.name: p.default for p in PresenceXmlModule.params}
    return list(PresenceXmlModule(object(), defaults | {"force_active": 1}).make_events())


async def test_the_module_runs_as_worker_node_w_slot_on_sqlite(tmp_path: Path) -> None:
    from routescript.core.module import ConfigError
    from routescript.modules.presence import PresenceModule

    url = f"sqlite://{tmp_path}/presence.sqlite"
    hosts = [ModuleHost(0), ModuleHost(1)]
    mods = [PresenceModule(h, module_params(db_url=url)) for h in hosts]
    try:
        for slot, mod in enumerate(mods):
            for ev in xml_events():
                mod.add_event(ev)
            mod.check()
            mod.run_as_worker(WorkerIdentity(slot, 2))
            await mod.start()
        w0, w1 = mods
        assert w0.cluster is not None and w0.cluster.node_id == "w0" and w0.cluster.config.cluster_id == 0
        assert isinstance(w0.cluster.membership, SupervisedMembership)
        assert w0.service is not None and w0.service.store is not None
        assert w0.service.store.sharing_tag == "w0"
        assert w0.service.persistence.refresh_before_reply and not w0.service.settings.fallback2db
        assert w1.service is not None
        assert await w1.service.handle_subscribe(PresenceCtx(subscribe("erin"), WATCHER_SRC)) == 1
        assert await w1.adopt_worker(0) == 0        # w0 has no subscription to give
        with pytest.raises(RuntimeError, match="before the presence module starts"):
            w0.run_as_worker(WorkerIdentity(0, 2))
        w0.resync()
        await asyncio.sleep(0.01)
        assert w0.cluster.stats.resyncs == 1
        # w1 again: at the server's first start (epoch 0) its watchers hear nothing, as a lone server's;
        # a restart of the slot (epoch 1) sends each the current state (announcements it missed)
        for epoch, told in ((0, 0), (1, 1)):
            await mods[1].stop()
            for db in hosts[1].dbs:     # the host goes with its module: its connections close with it
                await db.close()
            hosts[1] = ModuleHost(1)
            mods[1] = start_again = PresenceModule(hosts[1], module_params(db_url=url))
            for ev in xml_events():
                start_again.add_event(ev)
            start_again.check()
            start_again.run_as_worker(WorkerIdentity(1, 2, epoch))
            await start_again.start()
            assert start_again.service is not None
            await start_again.service.sender.drain(1)
            assert len(start_again.service.subscriptions) == 1 and len(hosts[1].transactions.sent) == told
    finally:
        for mod in mods:
            await mod.stop()
        for h in hosts:
            for db in h.dbs:
                await db.close()
    # cluster_id on SQLite stays refused: other machines cannot read the file
    solo = PresenceModule(ModuleHost(None), module_params(db_url=url, cluster_id=1, cluster_sharing_tag="n1"))
    with pytest.raises(ConfigError, match="PostgreSQL"):
        solo.check()
