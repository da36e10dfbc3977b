"""The read side: availability served from replicated caches of every pool's view (the replicas' actor
names are in ``cluster/names.py``)."""
