"""routescript.workers - several worker processes behind one set of SIP sockets (docs/workers.md).

dispatch: which worker owns a message (sans-IO) and the slot-carrying branch and tag forms;
messages: the inbox message codecs; inbox: the per-slot socketpair inboxes; router: WorkerDispatcher,
the transport's front that hands messages and TCP writes to their owners; node: what connects one
worker to the others (tokens, feed relay, adoption); plan, supervisor, child, control, restart, sockets:
the processes and their control channel.
"""
