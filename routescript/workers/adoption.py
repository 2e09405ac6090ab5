"""The state of dead workers (docs/workers.md section 5): a slot down for ADOPT_AFTER seconds is adopted
by the live worker holding the fewest subscriptions, and the slot table (which worker a slot's messages
go to) follows every adoption and every return; its restart waits for the adopter's Adopted."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from routescript.core.log import NOTICE

from .control import Adopt, Adopted, SlotTableUpdate
from .dispatch import SlotTable

if TYPE_CHECKING:
    from .worker_process import Worker

log = logging.getLogger("routescript.workers")

ADOPT_AFTER = 2.0        # seconds a slot may be down before a live worker adopts its state
ADOPT_TIMEOUT = 30.0     # seconds the restart of an adopted slot waits for Adopted at most


class SlotAdoption:
    """Adoptions under way and the slot table among the workers of `workers` (the supervisor's table,
    slot -> Worker, kept up to date by it) of `total` slots."""

    def __init__(self, workers: dict[int, Worker], total: int) -> None:
        self._workers = workers
        self.slot_table = SlotTable.identity(total)
        self._adoptions: dict[int, asyncio.Future[None]] = {}   # slot -> done when its Adopted came
        self._adopters: dict[int, int] = {}                     # slot being adopted -> by which slot

    def adopt_if_down(self, slot: int) -> None:
        """ADOPT_AFTER seconds after `slot`'s worker died: still not running (its back-off goes on), a
        live worker, the one holding the fewest subscriptions, adopts its state (docs/workers.md 5)."""
        if slot in self._workers or slot in self._adoptions:
            return
        live = [w for w in self._workers.values()
                if w.ready.done() and w.ready.result() is None and not w.exited.done()]
        if not live:
            log.error("w%d is down and no worker runs to adopt its state", slot)
            return
        adopter = min(live, key=lambda w: (w.load, w.slot))
        log.warning("w%d has not been running for %.0f s: w%d adopts its state", slot, ADOPT_AFTER,
                    adopter.slot)
        self._adoptions[slot] = asyncio.get_running_loop().create_future()
        self._adopters[slot] = adopter.slot
        adopter.channel.send(Adopt(slot))

    def adopted(self, adopter: Worker, message: Adopted) -> None:
        fut = self._adoptions.get(message.slot)
        if message.error:
            log.error("w%d could not adopt w%d: %s", adopter.slot, message.slot, message.error)
        else:
            log.log(NOTICE, "w%d adopted w%d (%d subscriptions)", adopter.slot, message.slot, message.adopted)
            self.set_owner(message.slot, adopter.slot)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def adopter_exited(self, worker: Worker) -> None:
        """`worker` exited: the slots it was adopting may restart."""
        for slot, adopter in list(self._adopters.items()):
            adoption = self._adoptions.get(slot)
            if adopter == worker.slot and adoption is not None and not adoption.done():
                log.error("w%d exited while adopting w%d", worker.slot, slot)
                adoption.set_result(None)

    async def wait_before_restart(self, slot: int) -> bool:
        """Never two owners: the restart of an adopted slot waits for the adopter's Adopted (at most
        ADOPT_TIMEOUT seconds). Whether it was adopted (and so waited)."""
        adoption = self._adoptions.get(slot)
        if adoption is None:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(adoption), ADOPT_TIMEOUT)
        except TimeoutError:
            log.error("w%d: no Adopted within %.0f s: restarting it anyway", slot, ADOPT_TIMEOUT)
        self._adoptions.pop(slot, None)
        self._adopters.pop(slot, None)
        return True

    def restarted(self, slot: int) -> None:
        """`slot`'s worker runs again: adopted meanwhile, its new dialogs are its own."""
        if self.slot_table.owner_of[slot] != slot:
            self.set_owner(slot, slot)

    def set_owner(self, slot: int, owner: int) -> None:
        """Slot `slot`'s messages go to `owner` from now on (and those of slots it had adopted, when it is
        adopted in turn); the new table to every worker."""
        owner_of = list(self.slot_table.owner_of)
        old = owner_of[slot]
        for s, o in enumerate(owner_of):
            if s == slot or (owner != slot and o == old == slot):
                owner_of[s] = owner
        self.slot_table = SlotTable(self.slot_table.version + 1, tuple(owner_of))
        log.info("slot table version %d: %s", self.slot_table.version,
                 ", ".join(f"w{s}->w{o}" for s, o in enumerate(owner_of)))
        update = SlotTableUpdate(self.slot_table.version, list(owner_of))
        for worker in self._workers.values():
            worker.channel.send(update)
