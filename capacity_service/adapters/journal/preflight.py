"""Whether the journal the settings name can work, asked once before the service starts: a journal that
cannot (its driver missing, its server unreachable, its tables not creatable, a protocol it does not
speak) is refused with one line saying what is wrong and what to do, instead of a service that listens
and answers every request 504."""

from __future__ import annotations

from capacity_service.adapters.journal import open_journal
from capacity_service.adapters.journal.port import JournalError, JournalUnusable
from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings

# A stream id no pool can have (pool ids are checked against a pattern without spaces).
_PROBE_STREAM = "capacity-service preflight"
_PROTOCOLS = "3 for Cassandra 2.1, 4 for 3.x and 4.x, 5 for 4.x and 5.x"


def check_journal(settings: SqlJournalSettings | CassandraJournalSettings) -> None:
    """Open the journal (which creates its keyspace and tables when they are missing) and read from it
    once. Raises ``JournalUnusable`` whose message is the one line to show."""
    try:
        with open_journal(settings) as journal:
            journal.highest_seq_nr(_PROBE_STREAM)
    except ModuleNotFoundError as exc:
        raise JournalUnusable(_missing_driver(settings, exc)) from exc
    except (JournalError, OSError) as exc:
        raise JournalUnusable(_explained(settings, exc)) from exc


def _missing_driver(settings: SqlJournalSettings | CassandraJournalSettings, exc: ModuleNotFoundError) -> str:
    if exc.name and exc.name.split(".")[0] == "psycopg":
        return (
            f"the {settings.store} journal needs the psycopg driver, which is not installed: "
            "pip install 'capacity_service[postgres]'"
        )
    return f"the {settings.store} journal needs the module {exc.name!r}, which is not installed"


def _explained(settings: SqlJournalSettings | CassandraJournalSettings, exc: Exception) -> str:
    cause = " ".join(str(e) for e in _chain(exc))
    lowered = cause.lower()
    if isinstance(settings, CassandraJournalSettings):
        where = f"Cassandra at {', '.join(settings.contact_points)}:{settings.port}"
        if "protocol version" in lowered or "protocolexception" in lowered:
            asked = (
                f"CQL protocol v{settings.protocol_version}"
                if settings.protocol_version
                else "the driver's CQL protocol"
            )
            return f"{where} does not speak {asked}: set protocol_version in CAPACITY_JOURNAL ({_PROTOCOLS})"
        if "unauthorized" in lowered or "permission" in lowered:
            return (
                f"{where} refused to create or read keyspace {settings.keyspace!r} and its tables "
                f"({_first_line(exc)}): create them (docs/operations.md, 'Journals: what they need') or grant the "
                "user CREATE and MODIFY on the keyspace"
            )
        if "authenticat" in lowered or "credentials" in lowered:
            return f"{where} refused the login ({_first_line(exc)}): set CAPACITY_CASSANDRA_USERNAME and _PASSWORD"
        return (
            f"cannot reach {where} ({_first_line(exc)}): start it, or fix contact_points and port in CAPACITY_JOURNAL"
        )
    where = f"the {settings.store} journal at {_redacted(settings.url)}"
    if "permission denied" in lowered or "insufficientprivilege" in lowered:
        return (
            f"{where} cannot create or read its tables ({_first_line(exc)}): create them "
            "(docs/operations.md, 'Journals: what they need') or grant the user CREATE on the schema"
        )
    if settings.store == "sqlite":
        return f"{where} cannot be opened ({_first_line(exc)}): check the path and its permissions"
    return f"cannot reach {where} ({_first_line(exc)}): start it, or fix CAPACITY_JOURNAL_URL"


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unreadable URL)"
