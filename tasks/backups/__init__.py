"""Backups of PostgreSQL and Redis: files on disk, retention, the catalog and offsite copies."""
