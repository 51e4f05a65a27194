"""Fixtures the backup task tests share."""

from __future__ import annotations

import datetime as dt

import pytest

import tasks.clock
from tasks.backups.files import fresh_data_path, partial_path
from tasks.backups.retention import StoredBackup, store_backup

KEEP = {"daily": 7, "weekly": 4, "monthly": 0}


@pytest.fixture
def set_clock(monkeypatch):
    """Set the time the code reads (tasks/clock.py's now()): a backup taken on another day."""

    def set_to(moment: dt.datetime) -> None:
        monkeypatch.setattr(tasks.clock, "now", lambda: moment)

    return set_to


@pytest.fixture
def take_backup(set_clock):
    """What a backup task does after its dump, at moment: write a partial file, then store it."""

    def take(tdir, moment, content: bytes, keep=KEEP) -> StoredBackup:
        set_clock(moment)
        final = fresh_data_path(tdir, "market", ".dump")
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(final)
        partial.write_bytes(content)
        return store_backup(
            partial, final, {"kind": "test", "taken": moment.isoformat()}, tdir, keep
        )

    return take
