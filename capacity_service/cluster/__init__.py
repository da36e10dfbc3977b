"""The Ray layer: pool actors, routing, the watchdog. Only ``_ray`` imports Ray."""
