"""Settings, as pydantic models. Nothing is read from the environment at import time: callers build
them explicitly (``JournalSettings`` from Serve args, ``settings_from_env`` from ``CAPACITY_*``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, model_validator

from capacity_service.runtime.names import DEFAULT_NAMESPACE

_SIMPLE_REPLICATION: dict[str, str | int] = {"class": "SimpleStrategy", "replication_factor": 1}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlJournalSettings(_Settings):
    """SQL journal through SQLAlchemy Core: SQLite (the embedded default) or PostgreSQL."""

    kind: Literal["sql"] = "sql"
    url: str = "sqlite:///data/capacity.db"
    # FULL: an acknowledged write survives power loss, not just a process crash.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    pool_size: int = Field(default=5, ge=1)
    fetch_size: int = Field(default=2000, ge=1)

    @property
    def store(self) -> str:
        """The database, as logs and metrics name it: the URL's dialect ("sqlite", "postgresql")."""
        return self.url.split(":", 1)[0].split("+", 1)[0]


class CassandraJournalSettings(_Settings):
    """Cassandra journal; the layout follows akka-persistence-cassandra."""

    kind: Literal["cassandra"] = "cassandra"
    contact_points: list[str] = Field(default_factory=lambda: ["127.0.0.1"], min_length=1)
    port: int = Field(default=9042, ge=1, le=65535)
    keyspace: str = Field(default="capacity", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
    replication: dict[str, str | int] = Field(default_factory=lambda: dict(_SIMPLE_REPLICATION))
    # None lets the driver negotiate; Cassandra 2.1 needs 3 (the driver cannot negotiate down to it).
    protocol_version: int | None = None
    local_datacenter: str | None = None
    consistency: Literal["ONE", "LOCAL_QUORUM", "QUORUM", "ALL"] = "QUORUM"
    serial_consistency: Literal["SERIAL", "LOCAL_SERIAL"] = "SERIAL"

    @property
    def store(self) -> str:
        """The database, as logs and metrics name it."""
        return "cassandra"

    # Conditional (Paxos) appends fence zombie writers. Off = plain writes: faster, but only safe when
    # nothing can ever run two writers of one pool.
    lwt_fencing: bool = True
    partition_size: int = Field(default=20_000, ge=100)
    request_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    reconnect_max_delay_s: float = Field(default=2.0, gt=0)
    fetch_size: int = Field(default=5000, ge=1)
    username: str | None = None
    password: SecretStr | None = None


JournalSettings = Annotated[SqlJournalSettings | CassandraJournalSettings, Field(discriminator="kind")]
_JOURNAL_SETTINGS: TypeAdapter[SqlJournalSettings | CassandraJournalSettings] = TypeAdapter(JournalSettings)


class SnapshotSettings(_Settings):
    every_n_events: int = Field(default=1000, ge=1)
    keep: int = Field(default=2, ge=1)


def journal_settings(data: Mapping[str, Any]) -> SqlJournalSettings | CassandraJournalSettings:
    return _JOURNAL_SETTINGS.validate_python(dict(data))


def journal_settings_from_env(
    environ: Mapping[str, str] | None = None,
) -> SqlJournalSettings | CassandraJournalSettings:
    """``CAPACITY_JOURNAL`` holds the settings as JSON (e.g. ``{"kind": "cassandra", ...}``);
    ``CAPACITY_JOURNAL_URL`` is a shortcut for a SQL journal. Default: the embedded SQLite journal."""
    env = os.environ if environ is None else environ
    if raw := env.get("CAPACITY_JOURNAL"):
        return journal_settings(json.loads(raw))
    if url := env.get("CAPACITY_JOURNAL_URL"):
        return SqlJournalSettings(url=url)
    return SqlJournalSettings()


class WriteSideSettings(_Settings):
    """How pool writers are hosted and protected."""

    # Commands decided and written in one append at most (group commit).
    max_batch: int = Field(default=256, ge=1)
    # Recoveries running at once per host: many pools restarting together must not swamp the journal.
    max_concurrent_recoveries: int = Field(default=4, ge=1)
    # Consecutive journal failures before the circuit opens, and how long it stays open.
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=1.0, gt=0)
    # Commands waiting for one pool beyond those being written; more are refused (429 overloaded) at
    # once rather than answered late.
    max_queued_per_pool: int = Field(default=512, ge=1)


HostingMode = Literal["actor_per_pool", "sharded"]


class HostingSettings(_Settings):
    """Where pools live in the Ray cluster.

    ``sharded`` (the default): pools hashed onto ``shards`` named actors (``pool-shard:<k>``), each pool
    still single-writer inside, with its own journal stream, recovery and fencing. ``shards`` None: counted
    when the service is deployed and fixed from then on: one per CPU of the nodes that can host pools, one
    on a SQLite journal (one writer at a time).
    ``actor_per_pool``: one named detached actor per pool (``pool:<id>``): a process each (~80 MB, ~1 s of
    CPU to start), for deployments with few, heavy pools.
    """

    mode: HostingMode = "sharded"
    shards: int | None = Field(default=None, ge=1)
    namespace: str = Field(default=DEFAULT_NAMESPACE, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Custom Ray resources a pool actor needs, e.g. {"pool_host": 0.001} to keep pools off the head node.
    actor_resources: dict[str, float] = Field(default_factory=dict)
    # A command's deadline: a pool decides it only before this long after the caller sent it (else 503,
    # nothing taken); retries on a restarting actor included.
    call_timeout_s: float = Field(default=10.0, gt=0)
    # How long past its deadline a caller still waits for a command's answer (an append under way) before
    # answering 504 outcome_unknown. Also covers clock differences between nodes (deadlines are wall-clock).
    answer_grace_s: float = Field(default=5.0, gt=0)
    # Commands one process (an HTTP replica, a Python client) has sent to pools and not had answered yet;
    # more are refused (429 overloaded).
    max_commands_in_flight: int = Field(default=4096, ge=1)
    # Batches of commands one process has under way to one pool actor at once. None: one on a SQL journal
    # (batches then grow with the load and share a transaction), eight on Cassandra (each pool's append is
    # its own Paxos round; see runtime/router.batches_in_flight).
    batches_in_flight_per_actor: int | None = Field(default=None, ge=1, le=64)
    # Commands to a pool actor on the caller's own node go over a Unix socket the actor serves (Linux),
    # not Ray's RPC: a fraction of its latency. Off: every call goes through Ray.
    same_node_channel: bool = True
    watchdog_interval_s: float = Field(default=5.0, gt=0)
    watchdog_concurrency: int = Field(default=8, ge=1)


class HttpSettings(_Settings):
    """The HTTP API. With no keys configured, auth is off (the default, on loopback). In production set
    ``api_keys`` (reserve, release, reads) and ``admin_keys`` (also ``PUT /v1/pools``), through
    ``CAPACITY_API_KEYS`` / ``CAPACITY_ADMIN_KEYS`` (comma separated), never in a config file."""

    api_keys: list[SecretStr] = Field(default_factory=list)
    admin_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(default=16 * 1024, ge=256)
    # Requests one replica answers at once; more are refused (429 overloaded) at once, so that accepted
    # requests do not queue past the 100 ms target (chosen with benchmarks/ramp.py: docs/performance.md).
    max_requests_in_flight: int = Field(default=48, ge=1)
    # Without keys the API answers loopback clients only (403 to others), whatever address it listens
    # on; True opens it to every client without keys (a trusted network, on purpose).
    allow_remote_without_keys: bool = False
    # Clients of the availability stream one replica serves at once (each a connection and a queue of
    # up to 1,000 changes); more are refused (429). They do not count as requests in flight. 1,024: the
    # 1,000 clients of benchmarks/availability_stream.py (docs/performance.md).
    max_stream_clients: int = Field(default=1024, ge=1)
    # A stream with no change for this long gets a comment line, so that idle connections stay open.
    stream_heartbeat_s: float = Field(default=15.0, gt=0)


class ReadSideSettings(_Settings):
    # How often each cache replica pulls every pool's view to repair lost pushes (the staleness bound).
    anti_entropy_interval_s: float = Field(default=2.0, gt=0)
    # Pool actors coalesce view pushes for this long: one message per replica carries many pools. Every
    # message costs both processes Ray's fixed overhead per call.
    push_interval_s: float = Field(default=0.05, ge=0)
    # How often publishers and the supervisor look for replicas on new or gone nodes.
    membership_interval_s: float = Field(default=2.0, gt=0)
    # Serve replicas mirror their node's cache replica (pulling its changes this often) and answer
    # availability from the mirror while it synced within mirror_stale_after_s; else they ask the replica.
    mirror_interval_s: float = Field(default=0.05, gt=0)
    mirror_stale_after_s: float = Field(default=1.0, gt=0)
    # A pull with nothing new waits up to this long for a change (a long poll): an idle mirror then costs
    # four calls a second instead of twenty (each a few ms of CPU on both sides).
    mirror_wait_s: float = Field(default=0.25, ge=0)

    @model_validator(mode="after")
    def _mirror_syncs_before_it_goes_stale(self) -> ReadSideSettings:
        # Half the staleness bound at most: a slow round trip under load must not make the mirror stale.
        if self.mirror_wait_s + self.mirror_interval_s > self.mirror_stale_after_s / 2:
            raise ValueError("mirror_wait_s + mirror_interval_s must stay within half of mirror_stale_after_s")
        return self


class ParquetSinkSettings(_Settings):
    """The embedded warehouse: a Parquet dataset partitioned by event date, in a local folder or at any
    pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://...``)."""

    kind: Literal["parquet"] = "parquet"
    path: str = "data/warehouse"
    # Compaction merges a date partition's small files (below compact_small_file_bytes) once there are
    # at least compact_min_files of them; bigger files are left alone, which bounds its memory.
    compact_min_files: int = Field(default=16, ge=2)
    compact_small_file_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)


class SqlSinkSettings(_Settings):
    """A SQL warehouse through SQLAlchemy Core: PostgreSQL (COPY, and for a batch delivered again, staging
    then INSERT ... ON CONFLICT DO NOTHING), or SQLite for small setups. The password belongs in the URL
    from the environment (``CAPACITY_WAREHOUSE_URL``), never in a config file."""

    kind: Literal["sql"] = "sql"
    url: str = Field(repr=False)  # may hold a password: kept out of reprs and logs
    table: str = Field(default="capacity_events", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    deliveries_table: str = Field(default="capacity_event_deliveries", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    pool_size: int = Field(default=2, ge=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # A statement (or a connection gone silent: TCP keepalives) fails after this long instead of hanging
    # the stream; the batch is retried.
    statement_timeout_s: float = Field(default=60.0, gt=0)


class RedshiftSinkSettings(_Settings):
    """Amazon Redshift through redshift-connector. With ``s3_staging_uri`` each batch goes as a Parquet file
    to S3 and in with ``COPY ... FORMAT AS PARQUET`` (the bulk path); without it, by multi-row INSERT into
    the staging table. Either way ``MERGE`` moves staging into the target, in one transaction with the
    delivery offsets. The password comes from ``CAPACITY_REDSHIFT_PASSWORD`` only."""

    kind: Literal["redshift"] = "redshift"
    host: str
    port: int = Field(default=5439, ge=1, le=65535)
    database: str = "dev"
    user: str = "capacity_service"
    password: SecretStr | None = None
    schema_name: str = Field(default="public", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    table: str = Field(default="capacity_events", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    deliveries_table: str = Field(default="capacity_event_deliveries", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    s3_staging_uri: str | None = Field(default=None, pattern=r"^s3://[^/]+(/.*)?$")
    iam_role_arn: str | None = None
    region: str | None = None
    # Socket timeout of the connection: a silent network fails the batch (retried) instead of hanging.
    timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _bulk_path_can_read_s3(self) -> RedshiftSinkSettings:
        if self.s3_staging_uri is not None and self.iam_role_arn is None:
            raise ValueError("s3_staging_uri needs iam_role_arn: Redshift's COPY reads the staged files with it")
        return self


SinkSettings = Annotated[ParquetSinkSettings | SqlSinkSettings | RedshiftSinkSettings, Field(discriminator="kind")]


class WarehouseSettings(_Settings):
    """The analytics stream: every journal event becomes one warehouse row, exactly once."""

    enabled: bool = True
    sink: SinkSettings = Field(default_factory=ParquetSinkSettings)
    # Pools are hashed onto this many stream actors; each owns its pools' delivery cursors alone.
    streams: int = Field(default=1, ge=1, le=64)
    # A batch is flushed when it holds flush_rows rows or its oldest row waited flush_interval_s.
    flush_rows: int = Field(default=20_000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    # Rows held in memory at most; beyond that, events are left in the journal and caught up later.
    max_buffered_rows: int = Field(default=100_000, ge=1)
    # A full sweep of the journal for pools whose delivery lags, besides the catch-up of pools known to lag.
    catch_up_interval_s: float = Field(default=10.0, gt=0)
    # Sink retries back off up to this long.
    max_retry_backoff_s: float = Field(default=5.0, gt=0)
    # Pool actors coalesce events for this long: one message per stream carries many events (each Ray
    # message costs CPU on both sides; the flush interval dominates the lag anyway).
    push_interval_s: float = Field(default=0.1, ge=0)
    # How often the sink's upkeep runs (Parquet: compaction of small files).
    maintenance_interval_s: float = Field(default=60.0, gt=0)


class WebhookSettings(_Settings):
    """Webhooks: registered by an admin, delivered from the journal by the ``webhooks`` actor."""

    enabled: bool = True
    # Registrations at most (a PUT of a new one beyond it: 409 too_many_webhooks).
    max_webhooks: int = Field(default=16, ge=1, le=1000)
    # Loopback, link-local and private targets are refused unless this is set (a receiver on the
    # operator's own network, or a test's).
    allow_private_targets: bool = False
    # How often the journal's heads are read whole (one query over every stream), for the moves the pools'
    # and orders' hosts did not get to tell (they tell every one of them within about 100 ms).
    poll_interval_s: float = Field(default=5.0, gt=0)
    # One POST's time limit; a slower receiver's delivery is retried.
    request_timeout_s: float = Field(default=5.0, gt=0)
    # Retries back off exponentially from the first to the longest wait, with jitter (half fixed, half random).
    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)
    # Events read from the journal and not delivered yet, per webhook, at most (memory stays bounded: the
    # rest waits in the journal).
    max_pending_events: int = Field(default=1000, ge=1)
    # Streams (pools, orders) one webhook delivers to at once; each stream's events go one at a time, in order.
    max_concurrent_streams: int = Field(default=8, ge=1, le=256)
    # How often delivered cursors are saved: a restart sends again at most what was delivered since.
    cursor_save_interval_s: float = Field(default=0.5, gt=0)


class ServiceSettings(_Settings):
    journal: SqlJournalSettings | CassandraJournalSettings = Field(
        default_factory=SqlJournalSettings, discriminator="kind"
    )
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    write_side: WriteSideSettings = Field(default_factory=WriteSideSettings)
    hosting: HostingSettings = Field(default_factory=HostingSettings)
    read_side: ReadSideSettings = Field(default_factory=ReadSideSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    # The service's log lines (each naming its request id): text, or one JSON object per line.
    # Environment: CAPACITY_LOG_FORMAT.
    log_format: Literal["text", "json"] = "text"


def service_settings(
    args: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ServiceSettings:
    """Settings from the Serve application ``args`` (or a config file), then the environment on top:
    ``CAPACITY_JOURNAL`` (JSON) or ``CAPACITY_JOURNAL_URL``, and the secrets, which belong in the
    environment only: ``CAPACITY_API_KEYS`` and ``CAPACITY_ADMIN_KEYS`` (comma separated),
    ``CAPACITY_CASSANDRA_USERNAME`` / ``CAPACITY_CASSANDRA_PASSWORD``, ``CAPACITY_WAREHOUSE_URL`` (a SQL
    warehouse URL, which may hold a password) and ``CAPACITY_REDSHIFT_PASSWORD``."""
    env = os.environ if environ is None else environ
    settings = ServiceSettings.model_validate(dict(args or {}))
    updates: dict[str, Any] = {}
    if env.get("CAPACITY_JOURNAL") or env.get("CAPACITY_JOURNAL_URL"):
        updates["journal"] = journal_settings_from_env(env)
    journal = updates.get("journal", settings.journal)
    if isinstance(journal, CassandraJournalSettings) and env.get("CAPACITY_CASSANDRA_PASSWORD"):
        updates["journal"] = journal.model_copy(
            update={
                "username": env.get("CAPACITY_CASSANDRA_USERNAME", journal.username),
                "password": SecretStr(env["CAPACITY_CASSANDRA_PASSWORD"]),
            }
        )
    if (log_format := env.get("CAPACITY_LOG_FORMAT")) in ("text", "json"):
        updates["log_format"] = log_format
    if warehouse := _warehouse_from_env(settings.warehouse, env):
        updates["warehouse"] = warehouse
    keys = {
        name: _secret_list(env.get(var))
        for name, var in (("api_keys", "CAPACITY_API_KEYS"), ("admin_keys", "CAPACITY_ADMIN_KEYS"))
    }
    http_updates = {name: value for name, value in keys.items() if value}
    if http_updates:
        updates["http"] = settings.http.model_copy(update=http_updates)
    return settings.model_copy(update=updates) if updates else settings


def _secret_list(raw: str | None) -> list[SecretStr]:
    return [SecretStr(part.strip()) for part in (raw or "").split(",") if part.strip()]


def _warehouse_from_env(warehouse: WarehouseSettings, env: Mapping[str, str]) -> WarehouseSettings | None:
    sink = warehouse.sink
    if url := env.get("CAPACITY_WAREHOUSE_URL"):
        sink = sink.model_copy(update={"url": url}) if isinstance(sink, SqlSinkSettings) else SqlSinkSettings(url=url)
    if isinstance(sink, RedshiftSinkSettings) and env.get("CAPACITY_REDSHIFT_PASSWORD"):
        sink = sink.model_copy(update={"password": SecretStr(env["CAPACITY_REDSHIFT_PASSWORD"])})
    return None if sink is warehouse.sink else warehouse.model_copy(update={"sink": sink})
