"""RestartPolicy on a fake clock: 0.5 s doubling to worker_restart_backoff, reset after 60 s alive."""

from __future__ import annotations

import pytest

from routescript.workers.restart import RestartPolicy


def crash_loop(policy: RestartPolicy, slot: int, times: int, *, alive: float = 0.1,
               start: float = 0.0) -> list[float]:
    """Start, live `alive` seconds, crash; `times` times. The delays the policy gave."""
    now, delays = start, []
    for _ in range(times):
        policy.started(slot, now)
        now += alive
        delay = policy.exited(slot, now)
        delays.append(delay)
        now += delay
    return delays


def test_consecutive_crashes_double_up_to_the_maximum() -> None:
    policy = RestartPolicy(30)
    assert crash_loop(policy, 1, 9) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.restarts(1) == 9


def test_a_worker_alive_60_s_starts_again_from_half_a_second() -> None:
    policy = RestartPolicy(30)
    assert crash_loop(policy, 0, 4) == [0.5, 1, 2, 4]
    assert crash_loop(policy, 0, 1, alive=59.9, start=100) == [8]      # not long enough
    assert crash_loop(policy, 0, 2, alive=60, start=200) == [0.5, 0.5]  # each lived 60 s
    assert policy.restarts(0) == 7


def test_slots_back_off_independently() -> None:
    policy = RestartPolicy(4)
    assert crash_loop(policy, 0, 4) == [0.5, 1, 2, 4]
    assert crash_loop(policy, 1, 1) == [0.5]
    assert policy.restarts(2) == 0


def test_exit_without_a_recorded_start_still_backs_off() -> None:
    policy = RestartPolicy(2)
    assert [policy.exited(3, 0.0), policy.exited(3, 1.0), policy.exited(3, 2.0)] == [0.5, 1, 2]


def test_a_maximum_below_the_first_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="first delay"):
        RestartPolicy(0.1)


def test_the_supervisors_executor_leaves_no_thread_behind() -> None:
    """A thread left idle in the supervisor would make every later fork refuse (Supervisor._fork)."""
    import threading
    import time

    from routescript.workers.thread_per_call import ThreadPerCallExecutor

    before = threading.active_count()
    future = ThreadPerCallExecutor().submit(sum, [1, 2, 3])
    assert future.result(timeout=5) == 6
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
    failing = ThreadPerCallExecutor().submit(int, "x")
    with pytest.raises(ValueError, match="invalid literal"):
        failing.result(timeout=5)


def test_exit_statuses_in_words() -> None:
    from routescript.workers.worker_process import describe_exit

    assert describe_exit(1) == "status 1"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-40) == "killed by signal 40"   # a real-time signal has no name
