"""The process limits two core parameters set at start, before the privileges are dropped (raising a
hard limit needs root), as OpenSIPS's main.c does:

- open_files_limit = N: the open files limit (RLIMIT_NOFILE) raised to N when it is lower (0: left as
  it is). OpenSIPS fails to start when it cannot; so do we, naming the hard limit and the way out.
- disable_core_dump = yes: no core files (RLIMIT_CORE 0). Choice: `no` leaves the system's limit where
  OpenSIPS raises it to unlimited - a Python process rarely dumps core and the operator's setting (or
  systemd's LimitCORE=) is the better judge.
"""

from __future__ import annotations

import resource

from .config import CoreConfig
from .module import ConfigError


def set_resource_limits(config: CoreConfig) -> list[str]:
    """Apply open_files_limit and disable_core_dump; the lines to log. ConfigError (at the parameter's
    line) when the open files limit cannot be raised."""
    done: list[str] = []
    wanted = int(config.get("open_files_limit") or 0)
    if wanted > 0:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
            except (ValueError, OSError) as exc:
                raise ConfigError(f"open_files_limit = {wanted}: cannot raise the open files limit from "
                                  f"{soft} (hard limit {hard}): {exc}; start as root, or set LimitNOFILE= "
                                  f"in the systemd unit", config.positions.get("open_files_limit")) from None
            done.append(f"open files limit raised from {soft} to {wanted} (open_files_limit)")
    if config.get("disable_core_dump"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        done.append("core dumps disabled (disable_core_dump)")
    return done
