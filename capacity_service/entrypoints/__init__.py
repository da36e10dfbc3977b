"""How the service is reached: HTTP (``http``, on Ray Serve) and the ``capacity-service`` command."""
