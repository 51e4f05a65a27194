"""Backup files on disk: partial files never count, checksums catch a flipped byte, guards."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from tasks.backups.files import (
    PARTIAL_PREFIX,
    BackupError,
    BackupSet,
    clear_partials,
    ensure_free_space,
    fresh_data_path,
    list_sets,
    new_data_path,
    partial_path,
    target_dir,
    target_lock,
    verify_set,
)
from tasks.backups.retention import plan_retention


def names(tdir, tier):
    return [s.data.name for s in list_sets(tdir, tier)]


def test_partial_files_and_sets_without_manifest_never_count_as_backups(tmp_path, take_backup):
    tdir = target_dir(tmp_path, "postgres", "market")
    day = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    for i in range(3):
        take_backup(tdir, day + dt.timedelta(days=i), b"good %d" % i)
    # A killed run leaves a partial file; a crash between data and manifest leaves a bare file.
    partial_path(new_data_path(tdir, "market", day + dt.timedelta(days=9), ".dump")).write_bytes(
        b"half"
    )
    bare = new_data_path(tdir, "market", day + dt.timedelta(days=10), ".dump")
    bare.write_bytes(b"no manifest")

    kept, pruned = plan_retention(list_sets(tdir, "daily"), keep=2)
    assert [s.data.name for s in kept] == names(tdir, "daily")[1:3]  # the bare one is not kept
    assert "no manifest" in verify_set(BackupSet(bare, day))
    assert clear_partials(tdir) and not list(tdir.rglob(PARTIAL_PREFIX + "*"))


def test_a_flipped_byte_is_found_and_named(tmp_path, take_backup):
    tdir = target_dir(tmp_path, "postgres", "market")
    stored = take_backup(tdir, dt.datetime(2026, 5, 5, tzinfo=dt.UTC), os.urandom(5000))
    with open(stored.backup.data, "r+b") as fh:
        fh.seek(1234)
        byte = fh.read(1)
        fh.seek(1234)
        fh.write(bytes([byte[0] ^ 0x01]))
    problem = verify_set(stored.backup)
    assert stored.backup.data.name in problem and "sha256" in problem


def test_not_enough_disk_space_fails_before_anything_is_written(tmp_path):
    tdir = target_dir(tmp_path, "postgres", "market")
    tdir.mkdir(parents=True)
    with pytest.raises(BackupError, match="not enough free disk space.*nothing was deleted"):
        ensure_free_space(tdir, 1 << 60)


def test_a_second_backup_of_the_same_target_is_refused_while_one_runs(tmp_path):
    tdir = target_dir(tmp_path, "postgres", "market")
    with target_lock(tdir):
        with pytest.raises(BackupError, match="another backup"):
            with target_lock(tdir):
                pass


def test_a_new_backup_waits_out_a_name_clash_and_fails_if_the_clock_does_not_move(
    tmp_path, take_backup
):
    tdir = target_dir(tmp_path, "postgres", "market")
    moment = dt.datetime(2026, 5, 5, 3, 30, tzinfo=dt.UTC)
    first = take_backup(tdir, moment, b"first")
    assert first.backup.taken_at == moment  # named by the clock the code reads (tasks/clock.py)
    # The same second again, and a clock that stays there: an error naming the file, not a hang.
    with pytest.raises(BackupError, match=f"{first.backup.data.name} already exists"):
        fresh_data_path(tdir, "market", ".dump")
