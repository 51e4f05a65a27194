"""The PostgreSQL databases to back up and how to reach them: psycopg, or pg_* tools as children."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from pydantic import SecretStr

from tasks.alerts.redact import redact
from tasks.backups.files import BackupConnectionLost, BackupError
from tasks.retries import connection_lost

# How long a dump or restore waits for a table lock before it fails (and says so).
LOCK_TIMEOUT_S = 60

# libpq reads these from the environment: the child gets the password there, never in argv.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}
_COUNT_TABLES = """
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
    ORDER BY 1, 2
"""


@dataclass(frozen=True)
class PgTarget:
    """One database to back up; the URL stays secret, the label is safe to show."""

    url: SecretStr

    @property
    def params(self) -> dict[str, str]:
        from psycopg.conninfo import conninfo_to_dict

        return {k: str(v) for k, v in conninfo_to_dict(plain_url(self.url)).items()}

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or "postgres"

    @property
    def label(self) -> str:
        p = self.params
        return f"{p.get('host', 'localhost')}:{p.get('port', '5432')}/{self.dbname}"

    @property
    def secrets(self) -> list[str]:
        """What must never be shown: the URL and its password."""
        return [plain_url(self.url), self.params.get("password", "")]

    def with_dbname(self, dbname: str) -> PgTarget:
        from psycopg.conninfo import make_conninfo

        return PgTarget(SecretStr(make_conninfo(plain_url(self.url), dbname=dbname)))


def plain_url(url: SecretStr | str) -> str:
    """A libpq URL from SQLAlchemy spellings (postgresql+psycopg:// -> postgresql://)."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    scheme, sep, rest = raw.partition("://")
    return (scheme.split("+", 1)[0] + sep + rest) if sep else raw


def is_postgres(url: str) -> bool:
    return url.split("+", 1)[0].split(":", 1)[0] in ("postgresql", "postgres")


def resolve_targets(databases: list[str] | None, settings) -> list[PgTarget]:
    """The configured databases, or the named ones on the configured server."""
    configured = []
    if settings.backup_database_urls is not None:
        raw = settings.backup_database_urls.get_secret_value()
        configured = [PgTarget(SecretStr(u.strip())) for u in raw.split(",") if u.strip()]
        configured = _checked(configured, "INVESTFLOW_BACKUP_DATABASE_URLS")
    store_url = settings.database_url.get_secret_value()
    if not configured and is_postgres(store_url):
        configured = _checked([PgTarget(SecretStr(store_url))], "INVESTFLOW_DATABASE_URL")
    if not databases:
        if not configured:
            raise BackupError(
                "no PostgreSQL database to back up: set INVESTFLOW_BACKUP_DATABASE_URLS or "
                "point INVESTFLOW_DATABASE_URL at PostgreSQL"
            )
        return configured
    if not configured:
        raise BackupError(
            f"databases {databases} are names on the configured server, but no PostgreSQL "
            "server is configured (INVESTFLOW_BACKUP_DATABASE_URLS or INVESTFLOW_DATABASE_URL)"
        )
    # Names only: a URL given as a parameter would be stored, password and all, with the run.
    return [configured[0].with_dbname(name) for name in databases]


def _checked(targets: list[PgTarget], setting: str) -> list[PgTarget]:
    """The targets, each parsed once here so a malformed URL is named without being shown."""
    from psycopg import ProgrammingError

    for number, target in enumerate(targets, 1):
        try:
            target.params  # noqa: B018 - parsing is the check
        except ProgrammingError:
            # libpq's parse error repeats the whole string, password included.
            raise BackupError(
                f"entry {number} of {setting} is not a valid PostgreSQL URL"
            ) from None
    return targets


def child_env(target: PgTarget) -> dict[str, str]:
    """The environment for pg_dump/pg_restore: PG* variables, no connection string in argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in target.params.items():
        if key in _LIBPQ_ENV:
            env[_LIBPQ_ENV[key]] = value
    return env


def connect(target: PgTarget, **kwargs):
    import psycopg

    try:
        return psycopg.connect(plain_url(target.url), connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        # psycopg's message names host and port, never the password.
        message = f"cannot reach PostgreSQL {target.label}: {exc}".strip()
        if connection_lost(exc):  # down or restarting, not refusing us: worth another try
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            raise BackupConnectionLost(
                f"cannot reach PostgreSQL {target.label} ({first}): the server is down or "
                "restarting. Nothing was read or written. A rerun is safe once it answers again."
            ) from None
        raise BackupError(message) from None


def count_rows(conn) -> dict[str, int]:
    """Exact row count of every user table, in the connection's current snapshot."""
    from psycopg import sql

    counts = {}
    for schema, table in conn.execute(_COUNT_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        counts[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]
    return counts


def drain_stderr(stream, limit: int = 4000) -> tuple[threading.Thread, list[bytes]]:
    """Read a child's stderr in memory (a thread, so a chatty child never blocks on the pipe).

    In memory, not in a file beside the dump: a full disk must not swallow the very message
    that says the disk is full.
    """
    tail: list[bytes] = []

    def read():
        for chunk in iter(lambda: stream.read(4096), b""):
            tail.append(chunk)
            while sum(map(len, tail)) > limit and len(tail) > 1:
                tail.pop(0)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, tail


def stderr_message(thread: threading.Thread, tail: list[bytes], secrets: list[str]) -> str:
    """The last of what drain_stderr read, with the secrets blanked out."""
    thread.join(timeout=10)
    return redact(b"".join(tail).decode(errors="replace").strip()[-2000:], secrets)
