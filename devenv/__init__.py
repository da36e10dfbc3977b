"""Throwaway local database servers (Cassandra 2.1, PostgreSQL 15) on 127.0.0.1 for tests.

Standard library only, so it works before the project's dependencies are installed.
Run ``python -m devenv up --dir DIR`` to start both in the foreground.
"""

from devenv._process import ServerError
from devenv.cassandra import LocalCassandra
from devenv.postgres import LocalPostgres

__all__ = ["LocalCassandra", "LocalPostgres", "ServerError"]
