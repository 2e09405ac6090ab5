"""Log a recurring problem at most once per key (a source address) per interval - bounded memory."""

from __future__ import annotations

import logging
from collections import OrderedDict


class RateLimitedLog:
    """`log(key, now, msg, *args)` writes the line only when `key` was not logged in the last
    `interval` seconds; lines held back are counted and reported with the next one."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0, max_keys: int = 1024,
                 level: int = logging.WARNING) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self.level = level
        self._seen: OrderedDict[object, tuple[float, int]] = OrderedDict()

    def log(self, key: object, now: float, msg: str, *args: object, level: int | None = None) -> bool:
        """True when the line was written."""
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self.logger.log(self.level if level is None else level, msg, *args)
        return True
