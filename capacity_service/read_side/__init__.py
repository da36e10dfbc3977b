"""The read side: availability served from replicated caches of every pool's view."""

CACHE_PREFIX = "availability-cache:"


def cache_name(node_id: str) -> str:
    """The name of the availability cache replica on a node."""
    return f"{CACHE_PREFIX}{node_id}"
