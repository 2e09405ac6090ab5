"""routescript.testing - helpers for tests that talk SIP to a running server over real sockets.

`SipTestClient` is a small UA (UDP or TCP): build PUBLISH/SUBSCRIBE/OPTIONS with fresh Call-ID, branch
and tags, send and await responses, await incoming requests (NOTIFY) and answer them. See client.py.
"""

from routescript.testing.client import Dialog, SipTestClient, SipTimeout
from routescript.testing.pidf import pidf
from routescript.testing.ports import free_port

__all__ = ["Dialog", "SipTestClient", "SipTimeout", "free_port", "pidf"]
