"""Process helpers shared by the local database servers.

Each server runs as the leader of its own session, so a Ctrl-C in the terminal running
the tests is not delivered to it behind our back. Stop, crash (SIGKILL) and pause
(SIGSTOP) are sent to its process group and to all its descendants, so they reach every
process it forked.
"""

import atexit
import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"

# Servers started by this interpreter and not yet reaped; killed at exit so that a test
# run that forgets stop() (or fails half-way) leaves no database behind.
_children: "set[subprocess.Popen[bytes]]" = set()


@atexit.register
def _kill_children() -> None:
    for proc in list(_children):
        with contextlib.suppress(Exception):
            kill_tree(proc, timeout=5)


class ServerError(RuntimeError):
    """A local server failed to start, died, or did not stop."""


# Ports handed out for our servers come from below the kernel's ephemeral range: Ray's own
# processes bind port 0 and connect out from ephemeral ports, so a free port chosen there can
# be taken by Ray between our check and the server's bind (seen in CI: the driver's gRPC server
# took the port the Serve replica was told to listen on). 20000-29999 also stays clear of Ray's
# worker ports (10002-19999) and Serve's direct-ingress ranges (30000-31000, 40000-41000).
_QUIET_PORTS = range(20000, 30000)
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_ports() -> range:
    """The kernel's range for port-0 binds and outgoing connections (Linux; else an empty range)."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return range(0)
    return range(low, high + 1)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on loopback right now.

    Chosen at random outside the kernel's ephemeral range where possible (see ``_QUIET_PORTS``);
    another process may still bind one on purpose before the server does.
    """
    ephemeral = _ephemeral_ports()
    candidates = [port for port in _QUIET_PORTS if port not in ephemeral]
    random.shuffle(candidates)
    chosen: list[int] = []
    for port in candidates:
        if len(chosen) == count:
            break
        if _bindable(port):
            chosen.append(port)
    return chosen + _kernel_chosen_ports(count - len(chosen))


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _kernel_chosen_ports(count: int) -> list[int]:
    """Ports the kernel picks (port 0), held open together so it cannot pick one twice."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """Return one TCP port that is free on loopback right now."""
    return free_ports(1)[0]


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listens_on(pid: int, port: int) -> bool:
    """True if process ``pid`` itself holds a listening TCP socket on ``port`` (Linux).

    Stronger than a successful connect: Cassandra 2.1 ignores a failed bind of its CQL
    port, and a connect would then succeed against whoever else owns the port.
    """
    if not Path("/proc/net/tcp").exists():
        return port_accepts(port)
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... uid timeout inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            # Logs can be large (restarts append): read only the end.
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def file_size(path: Path) -> int:
    """Current size of ``path``, 0 if it does not exist (used to read only new log lines)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_contains(path: Path, needle: str, offset: int = 0) -> bool:
    """True if ``needle`` occurs in the log after byte ``offset`` (i.e. since this start)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()
    except OSError:
        return False


def spawn(
    argv: Sequence[str | Path],
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
) -> "subprocess.Popen[bytes]":
    """Start ``argv`` as the leader of a new session, stdout and stderr appended to ``log_path``.

    ``user``/``group`` switch to another uid/gid in the child (used to run PostgreSQL,
    which refuses to run as root); supplementary groups are then dropped.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    _children.add(proc)
    return proc


def run_logged(
    argv: Sequence[str | Path],
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
    timeout: float = 120,
    input_text: str | None = None,
) -> None:
    """Run a short helper command to completion, output appended to ``log_path``.

    Raises ServerError with the log tail if it fails, so setup errors are readable.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            result = subprocess.run(
                [str(a) for a in argv],
                input=input_text.encode() if input_text is not None else None,
                stdin=subprocess.DEVNULL if input_text is None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"{argv[0]} timed out after {timeout}s; log {log_path}:\n{log_tail(log_path)}") from exc
    if result.returncode != 0:
        raise ServerError(
            f"{' '.join(map(str, argv))} exited with {result.returncode}; log {log_path}:\n{log_tail(log_path)}"
        )


def wait_until(
    ready: Callable[[], bool],
    proc: "subprocess.Popen[bytes]",
    *,
    what: str,
    timeout: float,
    log_path: Path,
    interval: float = 0.1,
) -> None:
    """Poll ``ready()`` until true; fail fast if ``proc`` exits, kill it on timeout.

    The error carries the log tail because "did not start" alone is useless in CI output.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(
                f"{what} exited with code {proc.returncode} during startup; log {log_path}:\n{log_tail(log_path)}"
            )
        if ready():
            return
        if time.monotonic() >= deadline:
            kill_tree(proc)
            raise ServerError(
                f"{what} not ready after {timeout:.0f}s (killed it); log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(interval)


def _stat_fields(stat_path: Path) -> list[str] | None:
    """Fields of /proc/PID/stat after "pid (comm)", or None if the process is gone."""
    try:
        stat = stat_path.read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces and ")"


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of all live descendants of ``pid`` (Linux /proc; empty elsewhere).

    Needed because PostgreSQL backends call setsid(): they are the postmaster's children
    but not in its process group, so killpg() alone would miss them. The start time
    tells a process apart from a later one that reuses its pid.
    """
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(entry)
        if fields is not None and fields[0] != "Z":  # state, ppid, ..., starttime (#22)
            children.setdefault(int(fields[1]), []).append((int(entry.parent.name), fields[19]))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kid for kid, _ in kids)
    return found


def _state(pid: int, start_time: str) -> str | None:
    """State letter of that very process (R, S, T, Z, ...), None once it is gone."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    if fields is None or fields[19] != start_time:
        return None
    return fields[0]


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[None]:
    """Be a Linux child subreaper for a moment, so that processes orphaned by killing a
    leader are re-parented to us and can be reaped here.

    Otherwise they go to PID 1, and where PID 1 is not a real init (containers, some
    VMs) they stay zombies for good. Best effort: without prctl nothing changes.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = ctypes.c_int(0)
        adopted = libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) == 0
        adopted = adopted and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        adopted = False
    try:
        yield
    finally:
        if adopted:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, previous.value, 0, 0, 0)


def signal_tree(proc: "subprocess.Popen[bytes]", sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``proc`` and to all its descendants.

    The leader is signalled first so that, for SIGSTOP/SIGKILL, it cannot fork new
    children after the descendants were listed.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for pid, _ in descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(proc: "subprocess.Popen[bytes]", timeout: float = 30) -> None:
    """SIGKILL the leader and every descendant, wait until all are gone (simulates a crash)."""
    _children.discard(proc)
    if proc.poll() is not None:
        # Already exited and reaped: its pid may belong to someone else by now, so signal
        # nothing. (A clean shutdown ends the workers before the leader exits.)
        return
    deadline = time.monotonic() + timeout
    with _adopting_orphans():
        signal_tree(proc, signal.SIGSTOP)  # freeze first: no forking, no reacting to deaths
        # Listed now: once the leader is dead they can no longer be found through it.
        victims = descendants(proc.pid)
        for pid, _ in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:  # only possible in uninterruptible sleep (D state)
            raise ServerError(f"process {proc.pid} survived SIGKILL for {timeout}s") from exc
        while victims:
            pending = []
            for pid, start_time in victims:
                state = _state(pid, start_time)
                if state == "Z":  # dead; reap it if it was re-parented to us
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                elif state is not None:
                    pending.append((pid, start_time))
            victims = pending
            if victims and time.monotonic() >= deadline:
                raise ServerError(f"children of process {proc.pid} survived SIGKILL for {timeout}s")
            time.sleep(0.01 if victims else 0)


def terminate_tree(
    proc: "subprocess.Popen[bytes]", stop_signal: signal.Signals = signal.SIGTERM, timeout: float = 30
) -> None:
    """Ask the leader to shut down cleanly, then SIGKILL everything if it takes too long.

    The polite signal goes to the leader only: servers such as PostgreSQL give a
    different meaning to the same signal in their worker processes. The final
    kill_tree() removes anything left if the leader did not finish in time.
    """
    if proc.poll() is None:
        signal_tree(proc, signal.SIGCONT)  # a paused (SIGSTOPped) server cannot handle the signal
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    kill_tree(proc)


class ServerProcess:
    """What LocalCassandra and LocalPostgres share: one server process (tree) started by ``start()``."""

    _proc: "subprocess.Popen[bytes] | None" = None

    def start(self, timeout: float = 60) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 30) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the server process exists (also while paused)."""
        return self._proc is not None and self._proc.poll() is None

    def pause(self) -> None:
        """Freeze the server and every process it started (SIGSTOP): connections stay open, nothing answers."""
        if self._proc is not None:
            signal_tree(self._proc, signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        if self._proc is not None:
            signal_tree(self._proc, signal.SIGCONT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
