"""How many worker processes a configuration asks for, and which sockets each reads (docs/workers.md,
section 1): the one place that computes N_total from udp_workers/children, tcp_workers and every
`socket= ... use_workers K`.

Also the preview gate: until the dispatcher that hands each message to the worker holding its state is
merged, N_total > 1 forks workers only when ROUTESCRIPT_WORKERS_PREVIEW=1 is set (runs_workers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from routescript.core.config import CoreConfig, ListenSpec, Pos

Affinity = Literal["uri", "callid"]
AFFINITIES: tuple[Affinity, ...] = ("uri", "callid")
PREVIEW_ENV = "ROUTESCRIPT_WORKERS_PREVIEW"


@dataclass(frozen=True, slots=True)
class SocketReaders:
    """One listening socket and how many workers read it: slots 0..workers-1."""

    spec: ListenSpec
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """The worker parameters of one configuration, typed and checked (CoreConfig.worker_plan())."""

    udp_workers: int = 1
    tcp_workers: int = 1
    affinity: Affinity = "uri"
    restart_backoff: float = 30.0
    readers: tuple[SocketReaders, ...] = ()
    # the parameter that sets N_total and where the script sets it, for messages about it
    deciding: str = "udp_workers"
    deciding_pos: Pos | None = None

    @property
    def total(self) -> int:
        """N_total = max(udp_workers, tcp_workers, every use_workers): a worker with no socket to read
        still owns subscriptions and sends."""
        return max((self.udp_workers, self.tcp_workers, *(r.workers for r in self.readers)))

    def sockets_of(self, slot: int) -> list[ListenSpec]:
        """The sockets worker `slot` reads (it may send from every socket)."""
        return [r.spec for r in self.readers if slot < r.workers]

    @classmethod
    def of(cls, cfg: CoreConfig) -> WorkerPlan:
        udp = int(cfg.get("udp_workers") if "udp_workers" in cfg.values else cfg.get("children"))
        tcp = int(cfg.get("tcp_workers"))
        readers = tuple(SocketReaders(spec, spec.workers if spec.workers is not None else
                                      udp if spec.proto == "udp" else tcp) for spec in cfg.listen_specs())
        deciding, pos, best = "udp_workers", cfg.positions.get("udp_workers"), udp
        if "children" in cfg.values and "udp_workers" not in cfg.values:
            deciding, pos = "children", cfg.positions.get("children")
        if tcp > best:
            deciding, pos, best = "tcp_workers", cfg.positions.get("tcp_workers"), tcp
        for r in readers:
            if r.spec.workers is not None and r.workers > best:
                deciding, pos, best = f"socket {r.spec.name} use_workers", r.spec.pos, r.workers
        affinity = str(cfg.get("worker_affinity"))
        assert affinity in AFFINITIES, "apply_globals checked worker_affinity"
        return cls(udp, tcp, "uri" if affinity == "uri" else "callid",
                   float(cfg.get("worker_restart_backoff")), readers, deciding, pos)


def runs_workers(plan: WorkerPlan, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `routescript run` starts the supervisor and its workers. The preview gate lives here and
    only here: once the dispatcher (docs/workers.md, build plan step 5) is merged, this becomes
    `plan.total > 1`."""
    return plan.total > 1 and environ.get(PREVIEW_ENV) == "1"


def gate_warning(plan: WorkerPlan, environ: Mapping[str, str] = os.environ) -> str | None:
    """The load-time warning for a configuration asking for workers that the gate keeps in one process."""
    if plan.total <= 1 or runs_workers(plan, environ):
        return None
    return (f"{plan.deciding}={plan.total}: runs as 1 process: worker processes are being built (issue 18; "
            f"{PREVIEW_ENV}=1 starts them as a preview)")
