"""KeyedLocks: one lock per presentity, in arrival order, forgotten when free."""

import asyncio

import pytest

from routescript.modules.presence.locks import KeyedLocks


async def test_free_key_is_taken_without_waiting_and_forgotten_after():
    locks = KeyedLocks()
    async with locks.hold("sip:a@x"):
        assert locks.locked("sip:a@x") and not locks.locked("sip:b@x")
        async with locks.hold("sip:b@x"):   # another presentity is not blocked
            assert len(locks) == 2
    assert len(locks) == 0


async def test_waiters_served_in_arrival_order():
    locks = KeyedLocks()
    order: list[int] = []

    async def worker(i: int) -> None:
        async with locks.hold("k"):
            order.append(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert len(locks) == 0


async def test_cancelled_waiter_is_skipped_and_lock_passes_on():
    locks = KeyedLocks()
    got: list[str] = []
    await locks.acquire("k")

    async def wait(name: str) -> None:
        async with locks.hold("k"):
            got.append(name)

    a = asyncio.create_task(wait("a"))
    b = asyncio.create_task(wait("b"))
    await asyncio.sleep(0)
    a.cancel()
    locks.release("k")
    with pytest.raises(asyncio.CancelledError):
        await a
    await b
    assert got == ["b"] and len(locks) == 0


async def test_cancelled_just_after_being_handed_the_lock_passes_it_on():
    locks = KeyedLocks()
    await locks.acquire("k")
    a = asyncio.create_task(locks.acquire("k"))
    b = asyncio.create_task(locks.acquire("k"))
    await asyncio.sleep(0)
    locks.release("k")      # handed to a ...
    a.cancel()              # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await a
    await asyncio.wait_for(b, 1)   # b owns it now
    assert locks.locked("k")
    locks.release("k")
    assert len(locks) == 0
