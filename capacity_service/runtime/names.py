"""Every name the service gives in Ray, in one place: its namespace and its named actors.

All of them live in the service's namespace (``hosting.namespace``, default ``DEFAULT_NAMESPACE``), so that
``capacity-service stop --namespace`` finds them all, and two services on one cluster never share one.
"""

from __future__ import annotations

import zlib

DEFAULT_NAMESPACE = "capacity"

# Detached: runs the watchdog and keeps the per-node caches and the warehouse streams (runtime/supervisor.py).
SUPERVISOR_NAME = "supervisor"

# Pool hosts: a shard of pools (sharded hosting) or one pool (actor_per_pool hosting).
SHARD_PREFIX = "pool-shard:"
POOL_PREFIX = "pool:"

# One availability cache replica per node (runtime/cache_actor.py).
CACHE_PREFIX = "availability-cache:"

# The warehouse streams (runtime/warehouse_stream_actor.py), each owning the delivery of some pools.
STREAM_PREFIX = "warehouse-stream:"

# The webhooks' registrations and deliveries (runtime/webhook_actor.py): one per service.
WEBHOOKS_NAME = "webhooks"


def shard_name(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


def shard_of(pool_id: str, shards: int) -> int:
    return zlib.crc32(pool_id.encode()) % shards


def pool_actor_name(pool_id: str) -> str:
    return f"{POOL_PREFIX}{pool_id}"


def cache_name(node_id: str) -> str:
    """The name of the availability cache replica on a node."""
    return f"{CACHE_PREFIX}{node_id}"


def stream_name(stream: int) -> str:
    return f"{STREAM_PREFIX}{stream}"
