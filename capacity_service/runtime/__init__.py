"""The Ray layer: pool actors, routing, the watchdog. Every Ray call goes through ``_ray``; every name the
service gives in Ray is in ``names``."""
