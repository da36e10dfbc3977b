"""The yardstick: the service a team would otherwise write (stateless FastAPI + asyncpg + PostgreSQL,
a conditional UPDATE per reserve). Benchmarked side by side with capacity_service by benchmarks/http_load.py."""
