"""The layers made on the server's transport at start: the transaction layer (with tm's timers), and
the services built on it, server.requests and server.relay, with the process's one resolver."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routescript.resolve import Resolver
from routescript.transaction import TransactionLayer
from routescript.transport import TransportLayer

from .config import CoreConfig
from .module import ModuleSet

if TYPE_CHECKING:
    from .close_stack import CloseStack
    from .lifecycle import StartingServer


def make_transactions(server: StartingServer, closing: CloseStack,
                      transport: TransportLayer) -> TransactionLayer:
    """The transaction layer, with tm's timers when tm is loaded (its fr_timeout is Timer F of our
    client transactions, the NOTIFYs, as in OpenSIPS)."""
    from .relay import Relay
    from .requests import RequestSender

    # tm's statistics counted by the layer into the core's counters (transaction/counters.py)
    transactions = TransactionLayer(transport, counters=server.counters,
                                    **_transaction_options(server.modules))
    server.transactions = transactions
    # The services built on the transaction layer are made with it: server.requests ("send this
    # request inside this dialog / to this destination", requests.py).
    config = server.config
    server.requests = RequestSender(
        transactions, server.sockets,
        user_agent=config.user_agent_header if config.get("server_signature") else "")
    # relay: tm's t_relay and forward(); the resolver is chosen here, in one place
    server.relay = Relay(transactions, transport, server.sockets, make_resolver(server.config))
    closing.push("the transactions", transactions.close)
    return transactions


def _transaction_options(modules: ModuleSet) -> dict[str, Any]:
    """TransactionLayer's keyword arguments from tm (its timers, in seconds)."""
    tm = modules.get("tm")
    # tm is found by name: the core does not import modules/, so it asks for tm's one hook
    if tm is not None and hasattr(tm, "transaction_options"):
        return dict(tm.transaction_options())
    return {}


def make_resolver(config: CoreConfig) -> Resolver:
    """The next-hop resolver every sender uses, one per process: the one place it is chosen. RFC 3263
    over DNS with /etc/hosts and a TTL cache (routescript/resolve, docs/dns.md), from the core DNS
    parameters; IP literals never wait for it."""
    from routescript.resolve.resolver import DnsResolver

    return DnsResolver(config.dns_settings())
