"""The HTTP API (FastAPI app, served by Ray Serve)."""
