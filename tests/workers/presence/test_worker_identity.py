"""A worker's identity as a cluster node: its node id, the tags of slots beyond the count (orphans), and
the ClusterConfig it runs with, with and without a cluster."""

from __future__ import annotations

import pytest

from routescript.modules.presence.cluster import ClusterConfig, worker_config
from routescript.modules.presence.membership import MAX_WORKER_SLOTS, ClusterError, WorkerIdentity


def test_worker_identity_and_its_tags() -> None:
    me = WorkerIdentity(0, 3, epoch=2)
    assert me.node_id() == "w0" and me.node_id(2) == "w2" and me.node_id(cluster_tag="node1") == "node1.w0"
    assert me.orphan_tags()[:2] == ("w3", "w4") and len(me.orphan_tags()) == MAX_WORKER_SLOTS - 3
    assert WorkerIdentity(1, 3).orphan_tags() == ()
    for bad in ((3, 3), (-1, 2), (0, 0), (0, MAX_WORKER_SLOTS + 1), (True, 2)):
        with pytest.raises(ClusterError):
            WorkerIdentity(*bad)  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="32 characters"):
        me.node_id(cluster_tag="n" * 30)


def test_worker_config_with_and_without_a_cluster() -> None:
    solo = worker_config(WorkerIdentity(1, 2), None)
    assert (solo.cluster_id, solo.node_id, solo.channel, solo.adopt_untagged, solo.orphan_tags) == \
        (0, "w1", "rs_presence_workers", False, ())
    first = worker_config(WorkerIdentity(0, 2), None)
    assert first.adopt_untagged and first.orphan_tags[0] == "w2"
    node = worker_config(WorkerIdentity(0, 2), ClusterConfig(7, "node1"))
    assert (node.cluster_id, node.node_id, node.channel, node.orphan_tags[0]) == \
        (7, "node1.w0", "rs_presence_7", "node1.w2")
