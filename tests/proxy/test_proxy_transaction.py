"""tm's ProxyTransaction (modules/tm/proxy.py) over a fake relay and server: what goes upstream for each
reply (RFC 3261 16.7), best-response selection, 2xx/6xx cancelling the other branches, CANCEL before and
after a provisional, failover to the next target on 503 and on a timeout, fr_inv_timeout's 408."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from routescript.core.relay import Attempt, Relay
from routescript.modules.tm.proxy import Arm, ProxyTransaction, Settings
from routescript.modules.tm.select import pick_best, upstream_status
from routescript.resolve import Target
from routescript.script.context import Branch, MsgContext
from routescript.sip import SIPResponse, SocketInfo, Source, build_reply, parse_message
from routescript.transaction import TimerConfig, TransactionError

UDP = SocketInfo("udp", "127.0.0.1", 5060)


def invite():
    return parse_message(
        b"INVITE sip:bob@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKup1\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n"
        b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


class FakeTransactions:
    timers = TimerConfig()

    def __init__(self) -> None:
        self.cancels: list[Any] = []
        self.abandoned: list[Any] = []

    def send_request(self, req, dest, on_final, *, on_provisional=None, branch=None):
        self.cancels.append(req)
        return object()

    def abandon(self, transaction) -> None:
        self.abandoned.append(transaction)


class FakeRelay(Relay):
    """The real request building, targets from a table, sends recorded."""

    def __init__(self, targets: dict[str, list[Target]]) -> None:
        super().__init__(FakeTransactions(), None, [UDP], None)  # type: ignore[arg-type]
        self.table = targets
        self.sent: list[tuple[Attempt, Any, Any]] = []

    async def targets(self, uri_text: str) -> list[Target]:
        return list(self.table[uri_text])

    def send_stateful(self, attempt, on_final, on_provisional, *, fr_timeout=None):
        self.sent.append((attempt, on_final, on_provisional))
        return ("tx", len(self.sent))


class FakeServerTransactions:
    """Refuses a final reply after a 300-699 one, as the INVITE server transaction does."""

    def __init__(self) -> None:
        self.upstream: list[SIPResponse] = []
        self.relayed: list[bool] = []      # per reply: forwarded from a branch (True) or made here

    def reply(self, transaction, response, *, relayed=False) -> None:
        self.relayed.append(relayed)
        if response.status >= 200 and any(r.status >= 300 for r in self.upstream):
            raise TransactionError("cannot send a final response in state Completed")
        self.upstream.append(response)


class FakeTransport:
    def __init__(self) -> None:
        self.stateless: list[SIPResponse] = []

    def send_reply(self, response, source) -> None:
        self.stateless.append(response)


class FakeServer:
    def __init__(self) -> None:
        self.transactions = FakeServerTransactions()
        self.transport = FakeTransport()
        self.local: list[int] = []
        self.script = None

    def reply(self, ctx, code, reason=None):
        self.local.append(code)


class ServerTx:
    last_response = None
    reply_hooks = None
    failure_hooks = None


SETTINGS = Settings(fr_timeout=0.2, fr_inv_timeout=0.3, auto_100trying=True, restart_fr_on_each_reply=True,
                    disable_6xx_block=False)


def make(targets: dict[str, list[Target]], *, forks: tuple[str, ...] = (), settings: Settings = SETTINGS):
    server = FakeServer()
    relay = FakeRelay(targets)
    ctx = MsgContext(msg=invite(), source=Source("udp", UDP, "192.0.2.1", 5070), server=server)
    ctx.branches = [Branch(uri) for uri in forks] or None
    done: list[ProxyTransaction] = []
    tasks: list[asyncio.Task[None]] = []
    proxy = ProxyTransaction(ctx, ServerTx(), relay, settings,
                             lambda coro: tasks.append(asyncio.get_running_loop().create_task(coro)),
                             done.append)
    return proxy, ctx, relay, server, done


def answer(relay: FakeRelay, index: int, status: int, tag: str = "t") -> None:
    attempt, on_final, on_provisional = relay.sent[index]
    response = parse_message(build_reply(attempt.request, status, to_tag=tag).to_bytes())
    (on_provisional if status < 200 else on_final)(response)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


T1, T2 = Target("udp", "192.0.2.9", 5060), Target("udp", "192.0.2.10", 5060)
ALL = {"sip:bob@192.0.2.9": [T1], "sip:carl@192.0.2.10": [T2]}


async def test_relay_sends_100_and_every_branch() -> None:
    proxy, ctx, relay, server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    assert await proxy.relay_branches(ctx, False) == 1
    assert server.local == [100]
    assert [a.destination.host for a, _, _ in relay.sent] == ["192.0.2.9", "192.0.2.10"]
    assert relay.sent[0][0].request.max_forwards == 69


async def test_provisional_forwarded_without_our_via_100_not() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 100)
    answer(relay, 0, 180)
    await settle()
    up = server.transactions.upstream
    assert [r.status for r in up] == [180] and len(up[0].vias) == 1 and up[0].via.branch == "z9hG4bKup1"


async def test_2xx_forwarded_at_once_and_the_other_branch_cancelled() -> None:
    proxy, ctx, relay, server, done = make(ALL, forks=("sip:carl@192.0.2.10",))
    await proxy.relay_branches(ctx, False)
    answer(relay, 1, 180)
    answer(relay, 0, 200, "winner")
    await settle()
    assert [r.status for r in server.transactions.upstream] == [180, 200]
    cancels = relay.transactions.cancels
    assert len(cancels) == 1 and cancels[0].method == "CANCEL"
    assert cancels[0].via.branch == relay.sent[1][0].branch
    answer(relay, 1, 487)
    await settle()
    assert [r.status for r in server.transactions.upstream] == [180, 200]   # the 487 stays here
    assert server.transactions.relayed == [True, True]
    assert done == [proxy]


async def test_best_response_after_all_branches_and_503_becomes_500() -> None:
    proxy, ctx, relay, server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 503)
    await settle()
    assert server.transactions.upstream == []            # the other branch may still succeed
    answer(relay, 1, 603)
    await settle()
    assert [r.status for r in server.transactions.upstream] == [603]


async def test_6xx_cancels_the_other_branches() -> None:
    proxy, ctx, relay, server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    await proxy.relay_branches(ctx, False)
    answer(relay, 1, 183)
    answer(relay, 0, 600)
    await settle()
    assert [c.method for c in relay.transactions.cancels] == ["CANCEL"]
    answer(relay, 1, 487)
    await settle()
    assert [r.status for r in server.transactions.upstream] == [183, 600]


async def test_cancel_before_any_provisional_ends_the_branch_with_487_and_cancels_later() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    proxy.cancel()
    await settle()
    assert [r.status for r in server.transactions.upstream] == [487]
    assert relay.transactions.cancels == []              # RFC 3261 9.1: not before a provisional
    answer(relay, 0, 180)
    await settle()
    assert [c.method for c in relay.transactions.cancels] == ["CANCEL"]
    assert [r.status for r in server.transactions.upstream] == [487]


async def test_503_fails_over_to_the_next_target_with_a_new_branch() -> None:
    proxy, ctx, relay, server, _ = make({"sip:bob@192.0.2.9": [T1, T2]})
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 503)
    await settle()
    assert len(relay.sent) == 2 and relay.sent[1][0].destination.host == "192.0.2.10"
    assert relay.sent[1][0].branch != relay.sent[0][0].branch
    assert relay.transactions.abandoned
    answer(relay, 1, 200)
    await settle()
    assert [r.status for r in server.transactions.upstream] == [200]


async def test_timeout_without_reply_fails_over_then_408() -> None:
    proxy, ctx, relay, server, _ = make({"sip:bob@192.0.2.9": [T1, T2]})
    await proxy.relay_branches(ctx, False)
    await asyncio.sleep(0.25)                             # fr_timeout 0.2
    assert len(relay.sent) == 2
    await asyncio.sleep(0.25)
    assert [r.status for r in server.transactions.upstream] == [408]


async def test_fr_inv_timeout_after_a_provisional_cancels_and_408() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    await asyncio.sleep(0.4)                              # fr_inv_timeout 0.3
    assert [c.method for c in relay.transactions.cancels] == ["CANCEL"]
    assert [r.status for r in server.transactions.upstream] == [180, 408]
    # the 180 came from the branch, the 408 was made here: the reply hooks (acc) are told which
    assert server.transactions.relayed == [True, False]


async def test_each_provisional_restarts_fr_inv_timeout_from_its_arrival() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    await asyncio.sleep(0.2)
    answer(relay, 0, 183)
    await asyncio.sleep(0.2)                              # 0.4 after the 180, 0.2 after the 183
    assert [r.status for r in server.transactions.upstream] == [180, 183]
    await asyncio.sleep(0.2)                              # fr_inv_timeout 0.3 after the 183
    assert [r.status for r in server.transactions.upstream] == [180, 183, 408]


async def test_a_provisional_bringing_the_timeout_nearer_rearms_the_timer() -> None:
    settings = dataclasses.replace(SETTINGS, fr_timeout=5.0, fr_inv_timeout=0.1)
    proxy, ctx, relay, server, _ = make(ALL, settings=settings)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    await asyncio.sleep(0.25)                             # fr_inv_timeout 0.1, not fr_timeout's 5 s
    assert [r.status for r in server.transactions.upstream] == [180, 408]


async def test_t_set_fr_values_win_over_the_module_ones() -> None:
    proxy, ctx, _relay, server, _ = make(ALL)
    proxy.arm = Arm(fr_timeout=0.05)
    await proxy.relay_branches(ctx, False)
    await asyncio.sleep(0.1)
    assert [r.status for r in server.transactions.upstream] == [408]


@pytest.mark.parametrize(("codes", "best"), [
    ([486, 404], 1), ([486, 603, 404], 1), ([500, 486], 1), ([404, 407], 1), ([302, 486], 0),
    ([503, 504], 0), ([], None), ([180], None)])
def test_pick_best(codes: list[int], best: int | None) -> None:
    assert pick_best(codes) == best


def test_upstream_status_turns_503_into_500() -> None:
    assert upstream_status(503) == 500 and upstream_status(486) == 486


async def test_a_chosen_503_goes_upstream_as_500() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 503)
    await settle()
    up = server.transactions.upstream
    assert [(r.status, r.reason) for r in up] == [(500, "Server Internal Error")]
    assert len(up[0].vias) == 1


async def test_disable_503_translation_sends_the_503_on() -> None:
    # core disable_503_translation = yes (tm reads it into Settings.translate_503)
    proxy, ctx, relay, server, _ = make(ALL, settings=dataclasses.replace(SETTINGS, translate_503=False))
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 503)
    await settle()
    assert [r.status for r in server.transactions.upstream] == [503]


async def test_a_2xx_after_the_local_487_still_reaches_the_caller() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    proxy.cancel()                                         # no provisional yet: local 487 upstream
    await settle()
    answer(relay, 0, 200, "late")                          # the callee answered meanwhile
    await settle()
    assert [r.status for r in server.transactions.upstream] == [487]
    assert [(r.status, r.to.tag) for r in server.transport.stateless] == [(200, "late")]


class FakeScript:
    """Routes as data: onreply routes drop what `drop` lists; failure_route records its runs. `waits`:
    what may_wait says of every route (its run() never suspends either way), `waiting` the routes
    that say True when `waits` is False."""

    def __init__(self, drop: tuple[int, ...] = (), failure_replies: bool = False, *, waits: bool = True,
                 waiting: tuple[tuple[str, str | None], ...] = ()) -> None:
        self.drop = drop
        self.failure_replies = failure_replies
        self.waits = waits
        self.waiting = waiting
        self.runs: list[tuple[str, str | None, int | None]] = []
        self.failure_ruri: str | None = None
        self.branch_reply: str | None = None

    def has(self, kind: str, name: str | None = None) -> bool:
        return True

    def may_wait(self, kind: str, name: str | None = None) -> bool:
        return self.waits or (kind, name) in self.waiting

    async def run(self, kind: str, name: str | None, ctx: MsgContext) -> int:
        self.runs.append((kind, name, ctx.reply_code))
        if kind == "onreply" and ctx.reply_code in self.drop:
            ctx.extra["routescript.drop"] = True
        if kind == "failure":
            self.failure_ruri = ctx.msg.ruri
            if self.failure_replies:
                ctx.replied = True
        if kind == "branch" and self.branch_reply and ctx.msg.ruri.startswith("sip:carl"):
            ctx.extra["tm.branch_reply"] = self.branch_reply
        return 1


async def test_onreply_routes_run_global_then_named_and_drop_only_provisionals() -> None:
    proxy, ctx, relay, server, _ = make(ALL)
    server.script = FakeScript(drop=(180, 200))
    proxy.arm = Arm(on_reply="r")
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    answer(relay, 0, 200)
    await settle()
    assert [(k, n, c) for k, n, c in server.script.runs] == [
        ("onreply", None, 180), ("onreply", "r", 180), ("onreply", None, 200), ("onreply", "r", 200)]
    assert [r.status for r in server.transactions.upstream] == [200]   # the 180 dropped, not the 200


async def test_failure_route_runs_once_per_round_and_its_reply_wins() -> None:
    proxy, ctx, relay, server, done = make(ALL)
    server.script = FakeScript(failure_replies=True)
    proxy.arm = Arm(on_failure="f")
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 486)
    await settle()
    assert ("failure", "f", 486) in server.script.runs
    assert server.script.failure_ruri == "sip:bob@192.0.2.9"    # the winning branch's R-URI
    assert server.transactions.upstream == []          # the route replied itself (t_reply)
    assert proxy.arm.on_failure is None and done == [proxy]


async def test_a_cancel_during_the_lookup_sends_nothing_and_answers_487() -> None:
    proxy, ctx, relay, server, done = make(ALL)
    looked_up = asyncio.Event()
    original = relay.targets

    async def slow_targets(uri_text: str) -> list[Target]:
        looked_up.set()
        await asyncio.sleep(0.05)
        return await original(uri_text)

    relay.targets = slow_targets  # type: ignore[method-assign]
    relaying = asyncio.create_task(proxy.relay_branches(ctx, False))
    await looked_up.wait()
    proxy.cancel()
    assert await relaying == -3
    assert relay.sent == [] and server.local == [100, 487] and done == [proxy]


async def test_failure_hooks_see_the_rounds_failure_before_failure_route() -> None:
    """TMCB_ON_FAILURE: when every branch of a round failed, the failure hooks get the best failure and
    whether it was made here (fr_inv_timeout's 408: True; a callee's 486: False), before failure_route."""
    proxy, ctx, relay, server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    server.script = FakeScript(failure_replies=True)
    proxy.arm = Arm(on_failure="f")
    seen: list[tuple[int, bool, int]] = []

    def failure_routes_run() -> int:
        return sum(1 for run in server.script.runs if run[0] == "failure")
    proxy.server_transaction.failure_hooks = [
        lambda response, local: seen.append((response.status, local, failure_routes_run()))]
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    answer(relay, 1, 486)
    await asyncio.sleep(0.4)                              # branch 0: fr_inv_timeout 0.3 -> its own 408
    assert seen == [(408, True, 0)]                       # the 408 wins over the 486; failure_route after
    assert [r for r in server.script.runs if r[0] == "failure"] == [("failure", "f", 408)]


async def test_failure_route_gets_the_winning_branchs_ruri() -> None:
    proxy, ctx, relay, server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    server.script = FakeScript()
    proxy.arm = Arm(on_failure="f")
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 486)
    answer(relay, 1, 404)
    await settle()
    assert server.script.failure_ruri == "sip:carl@192.0.2.10"   # 404 beats 486 (lowest code)
    assert [r.status for r in server.transactions.upstream] == [404]


async def test_t_on_reply_in_branch_route_is_that_branchs_only() -> None:
    proxy, ctx, relay, server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    server.script = FakeScript()
    server.script.branch_reply = "carl_only"
    proxy.arm = Arm(on_branch="b", on_reply="all")
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    answer(relay, 1, 183)
    await settle()
    named = [(n, c) for k, n, c in server.script.runs if k == "onreply" and n is not None]
    assert named == [("all", 180), ("carl_only", 183)]


async def test_cancel_passes_the_reason_on_when_asked() -> None:
    proxy, ctx, relay, _server, _ = make(ALL)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    await settle()
    proxy.cancel('SIP;cause=200;text="Call completed elsewhere"')
    (cancel,) = relay.transactions.cancels
    assert cancel.header("reason") == 'SIP;cause=200;text="Call completed elsewhere"'


async def test_a_branch_path_becomes_its_route_and_destination() -> None:
    proxy, ctx, relay, _server, _ = make({**ALL, "sip:edge@192.0.2.10;lr": [T2]})
    ctx.branches = [Branch("sip:dan@10.0.0.5", path="<sip:edge@192.0.2.10;lr>")]
    await proxy.relay_branches(ctx, False)
    forked = relay.sent[1][0]
    assert forked.destination.host == "192.0.2.10"
    assert forked.request.header_all("route") == ["<sip:edge@192.0.2.10;lr>"]
    assert forked.request.ruri == "sip:dan@10.0.0.5"
    assert not relay.sent[0][0].request.has_header("route")


async def test_t_cancel_branch_current_others_all() -> None:
    proxy, ctx, relay, _server, _ = make(ALL, forks=("sip:carl@192.0.2.10",))
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    answer(relay, 1, 180)
    await settle()
    proxy.cancel_branches(0, "o")                       # from branch 0's reply: the others
    assert [c.via.branch for c in relay.transactions.cancels] == [relay.sent[1][0].branch]
    proxy.cancel_branches(0, "")                        # then the current one
    assert [c.via.branch for c in relay.transactions.cancels][1:] == [relay.sent[0][0].branch]
    proxy.cancel_branches(0, "a")                       # nothing left to cancel
    assert len(relay.transactions.cancels) == 2


async def test_a_reply_with_never_waiting_routes_is_handled_in_place() -> None:
    """No route on the way may wait: the reply routes run and the reply goes upstream inside the
    client transaction's callback, without a task; a route that may wait keeps the task."""
    proxy, ctx, relay, server, _ = make(ALL)
    server.script = FakeScript(waits=False)
    proxy.arm = Arm(on_reply="r")
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 180)
    assert [r.status for r in server.transactions.upstream] == [180]
    assert server.script.runs == [("onreply", None, 180), ("onreply", "r", 180)]
    assert not proxy._busy
    server.script.waits = True
    answer(relay, 0, 183)
    assert [r.status for r in server.transactions.upstream] == [180] and proxy._busy
    await settle()
    assert [r.status for r in server.transactions.upstream] == [180, 183] and not proxy._busy


async def test_a_final_reply_that_may_reach_a_waiting_failure_route_gets_a_task() -> None:
    """A 486 with t_on_failure armed for a route that may wait is handled in a task (failure_route
    runs there); the same reply without the failure route armed is handled in place."""
    proxy, ctx, relay, server, _ = make(ALL)
    server.script = FakeScript(waits=False, waiting=(("failure", "f"),))
    proxy.arm = Arm(on_failure="f")
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 486)
    assert server.script.runs == [] and not server.transactions.upstream and proxy._busy
    await settle()
    assert server.script.runs == [("onreply", None, 486), ("failure", "f", 486)]
    assert [r.status for r in server.transactions.upstream] == [486]
    proxy, ctx, relay, server, _ = make(ALL)
    server.script = FakeScript(waits=False, waiting=(("failure", "f"),))
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 486)
    assert [r.status for r in server.transactions.upstream] == [486] and not proxy._busy


async def test_what_an_in_place_reply_queues_is_handled_after_it_in_order() -> None:
    """A 2xx handled in place cancels the other branch; that branch (no provisional yet) ends with a
    local 487 queued meanwhile and handled after the 2xx, in a task: nothing of it goes upstream."""
    proxy, ctx, relay, server, done = make(ALL, forks=("sip:carl@192.0.2.10",))
    server.script = FakeScript(waits=False)
    await proxy.relay_branches(ctx, False)
    answer(relay, 0, 200)
    assert [r.status for r in server.transactions.upstream] == [200]
    assert proxy._busy and proxy.branches[1].final is None
    await settle()
    assert proxy.branches[1].final is not None and proxy.branches[1].final.status == 487
    assert [r.status for r in server.transactions.upstream] == [200] and done == [proxy]
    assert not proxy._busy
