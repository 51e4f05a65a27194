"""Backup files on disk: atomic commits, manifests last, tiers of hard links, count retention."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest

from tasks import backup_files as bf

KEEP = {"daily": 7, "weekly": 4, "monthly": 0}


def take_backup(tdir, moment, content: bytes, keep=KEEP) -> bf.StoredBackup:
    """What a backup task does after its dump: write a partial file, then store it."""
    final = bf.fresh_data_path(tdir, "market", ".dump", moment)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = bf.partial_path(final)
    partial.write_bytes(content)
    return bf.store_backup(
        partial, final, {"kind": "test", "taken": moment.isoformat()}, tdir, keep
    )


def names(tdir, tier):
    return [s.data.name for s in bf.list_sets(tdir, tier)]


def test_forty_days_of_daily_backups_keep_exactly_7_daily_and_4_weekly(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    start = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)  # a Sunday
    days = [start + dt.timedelta(days=i) for i in range(40)]
    with bf.target_lock(tdir):
        for i, moment in enumerate(days):
            take_backup(tdir, moment, f"dump of day {i}".encode())

    daily, weekly = bf.list_sets(tdir, "daily"), bf.list_sets(tdir, "weekly")
    assert [s.taken_at for s in daily] == days[-7:][::-1]
    # Weekly holds the first backup of each of the 4 newest ISO weeks.
    first_of_week = {}
    for moment in days:
        first_of_week.setdefault(moment.isocalendar()[:2], moment)
    assert [s.taken_at for s in weekly] == sorted(first_of_week.values())[-4:][::-1]
    assert not (tdir / "monthly").exists() or not os.listdir(tdir / "monthly")
    for s in daily + weekly:
        assert s.complete and bf.verify_set(s) is None
    # Hard links, not copies: a weekly file that is also a daily one shares its inode.
    shared = set(names(tdir, "daily")) & set(names(tdir, "weekly"))
    assert shared
    for name in shared:
        assert (tdir / "daily" / name).stat().st_ino == (tdir / "weekly" / name).stat().st_ino
    assert (tdir / "latest").resolve() == daily[0].data
    # Nothing but the kept sets and their manifests is left on disk.
    assert len(os.listdir(tdir / "daily")) == 14 and len(os.listdir(tdir / "weekly")) == 8


def test_monthly_tier_when_asked_for(tmp_path):
    tdir = bf.target_dir(tmp_path, "redis", "127.0.0.1:6379")
    keep = {"daily": 3, "weekly": 2, "monthly": 2}
    start = dt.datetime(2026, 1, 20, tzinfo=dt.UTC)
    for i in range(60):
        take_backup(tdir, start + dt.timedelta(days=i), b"x" * i, keep)
    months = [s.taken_at.date() for s in bf.list_sets(tdir, "monthly")]
    assert months == [dt.date(2026, 3, 1), dt.date(2026, 2, 1)]
    assert len(bf.list_sets(tdir, "daily")) == 3 and len(bf.list_sets(tdir, "weekly")) == 2


def test_manifest_holds_checksum_and_size_and_is_written_after_the_data(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    content = os.urandom(3 * bf.CHUNK + 17)
    stored = take_backup(tdir, dt.datetime(2026, 5, 5, tzinfo=dt.UTC), content)
    manifest = json.loads(stored.backup.manifest.read_text())
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest() == stored.sha256
    assert manifest["size_bytes"] == len(content)
    assert manifest["file"] == stored.backup.data.name
    assert stored.backup.manifest.stat().st_mtime_ns >= stored.backup.data.stat().st_mtime_ns
    assert not list(tdir.rglob(bf.PARTIAL_PREFIX + "*"))


def test_partial_files_and_sets_without_manifest_never_count_as_backups(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    day = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    for i in range(3):
        take_backup(tdir, day + dt.timedelta(days=i), b"good %d" % i)
    # A killed run leaves a partial file; a crash between data and manifest leaves a bare file.
    bf.partial_path(
        bf.new_data_path(tdir, "market", day + dt.timedelta(days=9), ".dump")
    ).write_bytes(b"half")
    bare = bf.new_data_path(tdir, "market", day + dt.timedelta(days=10), ".dump")
    bare.write_bytes(b"no manifest")

    kept, pruned = bf.plan_retention(bf.list_sets(tdir, "daily"), keep=2)
    assert [s.data.name for s in kept] == names(tdir, "daily")[1:3]  # the bare one is not kept
    assert "no manifest" in bf.verify_set(bf.BackupSet(bare, day))
    assert bf.clear_partials(tdir) and not list(tdir.rglob(bf.PARTIAL_PREFIX + "*"))


def test_a_flipped_byte_is_found_and_named(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    stored = take_backup(tdir, dt.datetime(2026, 5, 5, tzinfo=dt.UTC), os.urandom(5000))
    with open(stored.backup.data, "r+b") as fh:
        fh.seek(1234)
        byte = fh.read(1)
        fh.seek(1234)
        fh.write(bytes([byte[0] ^ 0x01]))
    problem = bf.verify_set(stored.backup)
    assert stored.backup.data.name in problem and "sha256" in problem


def test_not_enough_disk_space_fails_before_anything_is_written(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    tdir.mkdir(parents=True)
    with pytest.raises(bf.BackupError, match="not enough free disk space.*nothing was deleted"):
        bf.ensure_free_space(tdir, 1 << 60)


def test_a_second_backup_of_the_same_target_is_refused_while_one_runs(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    with bf.target_lock(tdir):
        with pytest.raises(bf.BackupError, match="another backup"):
            with bf.target_lock(tdir):
                pass


def test_a_failed_manifest_write_removes_only_the_new_file(tmp_path):
    tdir = bf.target_dir(tmp_path, "postgres", "market")
    day = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    old = take_backup(tdir, day, b"old and good")
    final = bf.new_data_path(tdir, "market", day + dt.timedelta(days=1), ".dump")
    partial = bf.partial_path(final)
    partial.write_bytes(b"new")
    # A directory where the manifest goes makes its write fail, as a full disk would.
    bf.manifest_path(final).mkdir()
    with pytest.raises(bf.BackupError, match="could not store"):
        bf.store_backup(partial, final, {}, tdir, KEEP)
    assert not final.exists() and not partial.exists()
    assert bf.verify_set(old.backup) is None and names(tdir, "daily") == [old.backup.data.name]
