"""PostgreSQL backups: pg_dump -Fc in an exported snapshot, row counts, pg_restore into scratch."""

from __future__ import annotations

import datetime as dt
import os
import resource
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE
from pydantic import SecretStr

from tasks.backups.files import (
    BackupError,
    clear_partials,
    ensure_free_space,
    estimate_size,
    fresh_data_path,
    newest_complete,
    partial_path,
    read_manifest,
    run_logger,
    target_dir,
    target_lock,
    utcnow,
)
from tasks.backups.retention import StoredBackup, store_backup
from tasks.redact import redact

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


@dataclass
class DumpResult:
    """What a dump knew about itself, for the manifest."""

    row_counts: dict[str, int]
    server_version: str
    pg_dump_version: str
    started_at: dt.datetime
    finished_at: dt.datetime
    snapshot: str = ""
    extra: dict = field(default_factory=dict)


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
        raise BackupError(f"cannot reach PostgreSQL {target.label}: {exc}".strip()) from None


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


def tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _limit_file_size(max_bytes: int | None):
    """preexec_fn: cap the dump's size (a disk quota); a write past it fails like a full disk."""
    if max_bytes is None:
        return None

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG), don't kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def _drain(stream, limit: int = 4000) -> tuple[threading.Thread, list[bytes]]:
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


def _message(thread: threading.Thread, tail: list[bytes], secrets: list[str]) -> str:
    thread.join(timeout=10)
    return redact(b"".join(tail).decode(errors="replace").strip()[-2000:], secrets)


def pg_dump(
    target: PgTarget,
    partial: Path,
    *,
    max_bytes: int | None = None,
    lock_timeout_s: int = LOCK_TIMEOUT_S,
) -> DumpResult:
    """pg_dump -Fc into partial, counting rows in the very snapshot the dump reads.

    A table locked by someone else fails the dump after lock_timeout_s instead of waiting for
    as long as the lock is held.
    """
    import psycopg

    started = utcnow()
    with connect(target, autocommit=True) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s)}s'")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        argv = [
            "pg_dump",
            "-Fc",
            "--snapshot",
            snapshot,
            f"--lock-wait-timeout={int(lock_timeout_s)}s",
            "-f",
            str(partial),
        ]
        try:
            proc = subprocess.Popen(
                argv,
                env=child_env(target),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_limit_file_size(max_bytes),
            )
            reader, tail = _drain(proc.stderr)
            try:
                # Counted while pg_dump runs: same snapshot, and the two overlap in time.
                counts = count_rows(conn)
            except psycopg.errors.LockNotAvailable:
                proc.wait()
                raise BackupError(
                    f"pg_dump of {target.label}: a table is locked by another session; gave "
                    f"up after the {int(lock_timeout_s)} s lock timeout"
                ) from None
            finally:
                returncode = proc.wait()
            conn.execute("COMMIT")
            if returncode != 0:
                raise BackupError(
                    f"pg_dump of {target.label} failed (exit {returncode}): "
                    f"{_message(reader, tail, target.secrets) or 'no message'}"
                )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return DumpResult(
        row_counts=counts,
        server_version=server_version,
        pg_dump_version=tool_version("pg_dump"),
        started_at=started,
        finished_at=utcnow(),
        snapshot=snapshot,
    )


@task(name="backup-database", tags=["backup"], cache_policy=NONE)
def backup_database(
    target: PgTarget,
    root: Path,
    keep: dict[str, int],
    *,
    now: dt.datetime | None = None,
    max_bytes: int | None = None,
    lock_timeout_s: int = LOCK_TIMEOUT_S,
) -> StoredBackup:
    """Dump one database into <root>/postgres/<db>/, then checksum, manifest, tiers, prune."""
    logger = run_logger()
    tdir = target_dir(root, "postgres", target.dbname)
    with target_lock(tdir):
        clear_partials(tdir)
        ensure_free_space(tdir, estimate_size(tdir))
        final = fresh_data_path(tdir, target.dbname, ".dump", now)
        partial = partial_path(final)
        logger.info("Dumping %s to %s", target.label, final)
        try:
            dump = pg_dump(target, partial, max_bytes=max_bytes, lock_timeout_s=lock_timeout_s)
        except OSError as exc:
            raise BackupError(f"pg_dump of {target.label} failed: {exc}") from None
        manifest = {
            "kind": "postgres",
            "database": target.dbname,
            "target": target.label,
            "format": "pg_dump custom (-Fc)",
            "server_version": dump.server_version,
            "pg_dump_version": dump.pg_dump_version,
            "started_at": dump.started_at.isoformat(),
            "finished_at": dump.finished_at.isoformat(),
            "row_counts": dump.row_counts,
        }
        stored = store_backup(partial, final, manifest, tdir, keep)
    logger.info(
        "Backed up %s: %s (%s bytes, sha256 %s); pruned %d",
        target.label,
        final.name,
        stored.size_bytes,
        stored.sha256,
        len(stored.pruned),
    )
    return stored


# ------------------------------------------------------------------ restore


def restore_counts(target: PgTarget, dump: Path) -> dict[str, int]:
    """pg_restore a dump into a scratch database on target's server; row counts; drop it."""
    scratch = f"investflow_verify_{uuid.uuid4().hex[:10]}"
    admin = target.with_dbname("postgres")
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        scratch_target = target.with_dbname(scratch)
        env = child_env(scratch_target)
        # A lock held on the scratch database (it is ours alone) would be a bug: fail fast.
        env["PGOPTIONS"] = f"-c lock_timeout={int(LOCK_TIMEOUT_S)}s"
        proc = subprocess.Popen(
            ["pg_restore", "--exit-on-error", "--no-owner", "--no-privileges", "-d", scratch,
             str(dump)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        reader, tail = _drain(proc.stderr)
        rc = proc.wait()
        if rc != 0:
            raise BackupError(
                f"pg_restore of {dump} failed (exit {rc}): "
                f"{_message(reader, tail, target.secrets) or 'no message'}"
            )
        with connect(scratch_target) as conn:
            return count_rows(conn)
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """What differs between the manifest's row counts and a restore's, one line per table."""
    diffs = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            diffs.append(f"{table}: manifest {want}, restored {got}")
    return diffs


@task(name="verify-postgres-restore", tags=["backup"], cache_policy=NONE)
def verify_restore(target: PgTarget, root: Path) -> dict:
    """Restore the newest dump of target into scratch and compare row counts with its manifest."""
    tdir = target_dir(root, "postgres", target.dbname)
    newest = newest_complete(tdir)
    if newest is None:
        raise BackupError(f"no complete PostgreSQL backup of {target.label} under {tdir}")
    manifest = read_manifest(newest.data)
    restored = restore_counts(target, newest.data)
    diffs = compare_counts(manifest["row_counts"], restored)
    if diffs:
        raise BackupError(
            f"restore of {newest.data} does not match its manifest: " + "; ".join(diffs)
        )
    run_logger().info(
        "Restored %s: %d tables, %d rows, all match",
        newest.data.name,
        len(restored),
        sum(restored.values()),
    )
    return {
        "path": str(newest.data),
        "sha256": manifest["sha256"],
        "tables": len(restored),
        "rows": sum(restored.values()),
        "taken_at": newest.taken_at,
    }
