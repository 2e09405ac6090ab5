"""routescript.transaction - RFC 3261 section 17 transactions.

Sans-IO machines (take `now`, expose `next_deadline()`): NonInviteServerTransaction,
InviteServerTransaction, NonInviteClientTransaction; their transitions are the tables in `states`.
TransactionLayer is the asyncio adapter: lookup/create/reply for server transactions, `await request`
and `on_response` for client ones (NOTIFY). See docs/internals.md.
"""

from routescript.transaction.client import NonInviteClientTransaction
from routescript.transaction.errors import TransactionError, TransactionLimitError
from routescript.transaction.keys import (
    MAGIC_COOKIE,
    client_key_of_request,
    client_key_of_response,
    server_key,
)
from routescript.transaction.layer import TransactionLayer, TransportLike
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
    "Deliver",
    "Effect",
    "Event",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "State",
    "TimerConfig",
    "TransactionError",
    "TransactionLayer",
    "TransactionLimitError",
    "Transmit",
    "TransportLike",
    "client_key_of_request",
    "client_key_of_response",
    "server_key",
    "server_transaction",
]
