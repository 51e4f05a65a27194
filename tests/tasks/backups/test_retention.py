"""Keeping backups: atomic commits, manifests last, tiers of hard links, count retention."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest

from tasks.backups.files import (
    CHUNK,
    PARTIAL_PREFIX,
    BackupError,
    list_sets,
    manifest_path,
    new_data_path,
    partial_path,
    target_dir,
    target_lock,
    verify_set,
)
from tasks.backups.retention import store_backup
from tests.tasks.backups.conftest import KEEP


def names(tdir, tier):
    return [s.data.name for s in list_sets(tdir, tier)]


def test_forty_days_of_daily_backups_keep_exactly_7_daily_and_4_weekly(tmp_path, take_backup):
    tdir = target_dir(tmp_path, "postgres", "market")
    start = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)  # a Sunday
    days = [start + dt.timedelta(days=i) for i in range(40)]
    with target_lock(tdir):
        for i, moment in enumerate(days):
            take_backup(tdir, moment, f"dump of day {i}".encode())

    daily, weekly = list_sets(tdir, "daily"), list_sets(tdir, "weekly")
    assert [s.taken_at for s in daily] == days[-7:][::-1]
    # Weekly holds the first backup of each of the 4 newest ISO weeks.
    first_of_week = {}
    for moment in days:
        first_of_week.setdefault(moment.isocalendar()[:2], moment)
    assert [s.taken_at for s in weekly] == sorted(first_of_week.values())[-4:][::-1]
    assert not (tdir / "monthly").exists() or not os.listdir(tdir / "monthly")
    for s in daily + weekly:
        assert s.complete and verify_set(s) is None
    # Hard links, not copies: a weekly file that is also a daily one shares its inode.
    shared = set(names(tdir, "daily")) & set(names(tdir, "weekly"))
    assert shared
    for name in shared:
        assert (tdir / "daily" / name).stat().st_ino == (tdir / "weekly" / name).stat().st_ino
    assert (tdir / "latest").resolve() == daily[0].data
    # Nothing but the kept sets and their manifests is left on disk.
    assert len(os.listdir(tdir / "daily")) == 14 and len(os.listdir(tdir / "weekly")) == 8


def test_monthly_tier_when_asked_for(tmp_path, take_backup):
    tdir = target_dir(tmp_path, "redis", "127.0.0.1:6379")
    keep = {"daily": 3, "weekly": 2, "monthly": 2}
    start = dt.datetime(2026, 1, 20, tzinfo=dt.UTC)
    for i in range(60):
        take_backup(tdir, start + dt.timedelta(days=i), b"x" * i, keep)
    months = [s.taken_at.date() for s in list_sets(tdir, "monthly")]
    assert months == [dt.date(2026, 3, 1), dt.date(2026, 2, 1)]
    assert len(list_sets(tdir, "daily")) == 3 and len(list_sets(tdir, "weekly")) == 2


def test_manifest_holds_checksum_and_size_and_is_written_after_the_data(tmp_path, take_backup):
    tdir = target_dir(tmp_path, "postgres", "market")
    content = os.urandom(3 * CHUNK + 17)
    stored = take_backup(tdir, dt.datetime(2026, 5, 5, tzinfo=dt.UTC), content)
    manifest = json.loads(stored.backup.manifest.read_text())
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest() == stored.sha256
    assert manifest["size_bytes"] == len(content)
    assert manifest["file"] == stored.backup.data.name
    assert stored.backup.manifest.stat().st_mtime_ns >= stored.backup.data.stat().st_mtime_ns
    assert not list(tdir.rglob(PARTIAL_PREFIX + "*"))


def test_a_failed_manifest_write_removes_only_the_new_file(tmp_path, take_backup):
    tdir = target_dir(tmp_path, "postgres", "market")
    day = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    old = take_backup(tdir, day, b"old and good")
    final = new_data_path(tdir, "market", day + dt.timedelta(days=1), ".dump")
    partial = partial_path(final)
    partial.write_bytes(b"new")
    # A directory where the manifest goes makes its write fail, as a full disk would.
    manifest_path(final).mkdir()
    with pytest.raises(BackupError, match="could not store"):
        store_backup(partial, final, {}, tdir, KEEP)
    assert not final.exists() and not partial.exists()
    assert verify_set(old.backup) is None and names(tdir, "daily") == [old.backup.data.name]
