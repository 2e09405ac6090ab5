"""How many worker processes a configuration asks for, and which sockets each reads (docs/workers.md,
section 1): the one place that computes N_total from udp_workers/children, tcp_workers and every
`socket= ... use_workers K`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from routescript.core.config import CoreConfig, ListenSpec, Pos

Affinity = Literal["uri", "callid"]
AFFINITIES: tuple[Affinity, ...] = ("uri", "callid")


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


def runs_workers(plan: WorkerPlan) -> bool:
    """Whether `routescript run` starts the supervisor and its workers: more than one worker asked for
    (N=1 is one process, exactly as without these parameters)."""
    return plan.total > 1
