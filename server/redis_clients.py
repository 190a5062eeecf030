"""Redis clients of the server: a single Redis (`redis://`, `rediss://`, `unix://`) or a Redis Cluster
(`redis+cluster://host:port/0`: any node; redis-py's RedisCluster finds the others).

Every key a command touches is one key or keys of one run, which share a slot through the run's hash tag
(trainer_agent.protocol.Keys), and the server's pipelines are not transactions, so the same calls work on
both. Live events are classic pub/sub, which a cluster relays to every node: the live hub subscribes on
the node the URL names (redis-py's asyncio cluster client has no pub/sub).
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from trainer_agent.protocol import redis_cluster_url


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client of `url`; for a cluster a RedisCluster, which answers the commands the server uses."""
    cluster = redis_cluster_url(url)
    if cluster is None:
        return redis.Redis.from_url(url, **kwargs)
    return cast(redis.Redis, RedisCluster.from_url(cluster, **kwargs))


def pubsub_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client to subscribe with: for a cluster, a plain client of the node the URL names."""
    return aioredis.Redis.from_url(redis_cluster_url(url) or url, **kwargs)
