"""Fixtures the backup task tests share."""

from __future__ import annotations

import pytest

from tasks.backups.files import fresh_data_path, partial_path
from tasks.backups.retention import StoredBackup, store_backup

KEEP = {"daily": 7, "weekly": 4, "monthly": 0}


@pytest.fixture
def take_backup():
    """What a backup task does after its dump: write a partial file, then store it."""

    def take(tdir, moment, content: bytes, keep=KEEP) -> StoredBackup:
        final = fresh_data_path(tdir, "market", ".dump", moment)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(final)
        partial.write_bytes(content)
        return store_backup(
            partial, final, {"kind": "test", "taken": moment.isoformat()}, tdir, keep
        )

    return take
