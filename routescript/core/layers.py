"""What the server's parts read of the server itself: the SIP layers start() makes and the configuration
load() installs. They are read at each use, never kept, because they are replaced after the parts are
made (start() makes the layers, load() replaces the configuration, tests set the layers by hand)."""

from __future__ import annotations

from typing import Protocol

from routescript.transaction import TransactionLayer
from routescript.transport import TransportLayer

from .config import CoreConfig


class SipLayers(Protocol):
    """The Server, as the dispatcher and the replier see it."""

    @property
    def config(self) -> CoreConfig: ...

    @property
    def transport(self) -> TransportLayer | None: ...

    @property
    def transactions(self) -> TransactionLayer | None: ...

    def is_myself(self, host: str, port: int | None = None) -> bool: ...
