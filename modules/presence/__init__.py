"""presence: the OpenSIPS presence server module (PUBLISH, SUBSCRIBE, NOTIFY).

Event packages register through the API in events.py/module.py (guide: docs/event-packages.md).
The logic lives in sans-IO files, one job each: events.py (event packages, add_event),
presentity.py (publications, pres_htable), subscription.py (subscriptions, subs_htable, state
table), notify.py (NOTIFY requests and bodies), etag.py. This package glues them to the core:
service.py composes PresenceService from parts that each own one job (see its docstring), and
server_api.py says what presence needs from the server.
"""

from .etag import EtagGenerator
from .events import (PUBL_TYPE, WINFO_TYPE, AggNbody, ApplyAuthNbody, AuxBodyProcessing, BodyError,
                     BuildEmptyPresInfo, EventRegistry, EvsPublHandl, EvsSubsHandl, GetAuthStatus,
                     GetRulesDoc, PresenceEvent, WinfoBody, parse_event_name)
from .notify import (NotifyRequest, build_notify, local_contact, presentity_body, subscription_state,
                     watcher_body)
from .presentity import PresentityTable, Publication, PublishAction, PublishDecision, PublishFacts
from .subscription import (SubEvent, SubscribeAction, SubscribeDecision, SubscribeFacts, Subscription,
                           SubState, SubsTable, transition)

from .module import PresenceModule, bind_presence

MODULE = PresenceModule

__all__ = [
    "MODULE", "PresenceModule", "bind_presence",
    "AggNbody", "ApplyAuthNbody", "AuxBodyProcessing", "BuildEmptyPresInfo", "EvsPublHandl", "EvsSubsHandl",
    "GetAuthStatus", "GetRulesDoc", "WinfoBody",
    "PUBL_TYPE", "WINFO_TYPE", "BodyError", "EtagGenerator", "EventRegistry", "NotifyRequest",
    "PresenceEvent", "PresentityTable", "Publication", "PublishAction", "PublishDecision", "PublishFacts",
    "SubEvent", "SubState", "SubsTable", "SubscribeAction", "SubscribeDecision", "SubscribeFacts",
    "Subscription", "build_notify", "local_contact", "parse_event_name", "presentity_body",
    "subscription_state", "transition", "watcher_body",
]
