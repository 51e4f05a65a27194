"""PostgreSQL backups: which databases (target), pg_dump, pg_restore into scratch, verification."""
