"""routescript.transaction - RFC 3261 section 17 transactions.

Sans-IO machines (take `now`, expose `next_deadline()`): NonInviteServerTransaction,
InviteServerTransaction, NonInviteClientTransaction; their transitions are the tables in `states`.
TransactionCore holds every transaction of a server without I/O (entry points take `now`; outboxes say
what to send and whom to answer; get_timer/handle_timer). TransactionLayer is its asyncio adapter:
lookup/create/reply for server transactions, `send_request`/`await request` and `on_response` for client
ones (NOTIFY). See docs/internals.md.
"""

from routescript.transaction.client import NonInviteClientTransaction
from routescript.transaction.completed import CompletedTransaction
from routescript.transaction.core import ClientTransaction, OnResponse, TransactionCore
from routescript.transaction.invite_client import InviteClientTransaction, ack_for
from routescript.transaction.errors import TransactionError, TransactionLimitError
from routescript.transaction.keys import (
    MAGIC_COOKIE,
    client_key_of_request,
    client_key_of_response,
    server_key,
)
from routescript.transaction.layer import TransactionLayer, Transport, TransportLike
from routescript.transaction.machine import Action, Deliver, Transmit
from routescript.transaction.server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    server_transaction,
)
from routescript.transaction.states import Effect, Event, State
from routescript.transaction.timers import TimerConfig

__all__ = [
    "MAGIC_COOKIE",
    "Action",
    "ClientTransaction",
    "InviteClientTransaction",
    "CompletedTransaction",
    "Deliver",
    "Effect",
    "Event",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "OnResponse",
    "ServerTransaction",
    "State",
    "TimerConfig",
    "TransactionCore",
    "TransactionError",
    "TransactionLayer",
    "TransactionLimitError",
    "Transmit",
    "Transport",
    "TransportLike",
    "ack_for",
    "client_key_of_request",
    "client_key_of_response",
    "server_key",
    "server_transaction",
]
