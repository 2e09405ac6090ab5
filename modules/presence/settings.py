"""The presence modparams the service reads (PresenceSettings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from routescript.core.netlist import NetworkList

from .limits import DEFAULT_MAX_PRESENTITIES, DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE
from .presentity import DEFAULT_MAX_AGGREGATED_BODY_SIZE


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """The modparams the service uses."""

    max_expires_publish: int = 3600
    max_expires_subscribe: int = 3600
    expires_offset: int = 0
    server_address: str = ""
    notify_offline_body: bool = False
    # mix_dialog_presence: presence watchers also see the presentity's live dialogs (mixing.py).
    mix_dialog_presence: bool = False
    end_sub_on_timeout: bool = True
    # OpenSIPS fallback2db: a lookup that misses in memory continues in the database (several servers
    # sharing one database), and subscription changes are written through at once instead of waiting
    # for db_update_period, so the other servers find them.
    fallback2db: bool = False
    # RPID <sphere> of the presentity's publication feeds the pres-rules sphere conditions; a PUBLISH
    # that changes it re-evaluates the watchers (OpenSIPS does the same).
    enable_sphere_check: bool = False
    # Pending/waiting authorization decisions (watchers table) older than this many days are forgotten.
    waiting_subs_daysno: int = 3
    # bla_presentity_spec parsed: (pseudo-variable name, key), None when not set.
    bla_presentity_spec: tuple[str, str | None] | None = None
    # Caps on the state kept (limits.py; 0 = no cap), and the addresses exempt from the per-address one.
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    max_subscriptions_per_source: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE
    max_presentities: int = DEFAULT_MAX_PRESENTITIES
    trusted_sources: NetworkList = field(default_factory=NetworkList)
    # Bytes the bodies of one presentity's publications (one event) may total (presentity.py).
    max_aggregated_body_size: int = DEFAULT_MAX_AGGREGATED_BODY_SIZE
