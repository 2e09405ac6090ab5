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


async def test_free_key_taken_and_given_back_inline():
    """Issue 18 item 11: a free key costs no acquire/release call (no future, no suspension); a held one
    still waits in line and is handed on."""
    locks = KeyedLocks()
    calls: list[str] = []
    acquire, release = locks.acquire, locks.release

    async def counted_acquire(key: str) -> None:
        calls.append("acquire")
        await acquire(key)

    def counted_release(key: str) -> None:
        calls.append("release")
        release(key)

    locks.acquire, locks.release = counted_acquire, counted_release   # type: ignore[method-assign]
    async with locks.hold("k"):
        assert locks.locked("k")
    assert calls == [] and len(locks) == 0

    order: list[str] = []

    async def second() -> None:
        async with locks.hold("k"):
            order.append("second")

    async with locks.hold("k"):
        task = asyncio.create_task(second())
        await asyncio.sleep(0)
        order.append("first")
    await task
    assert order == ["first", "second"] and calls == ["acquire", "release"] and len(locks) == 0
