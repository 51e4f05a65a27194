"""Keeping backups: commit a new one, hard-link it into weekly/monthly tiers, prune by count."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from tasks.backups.files import (
    TIERS,
    BackupError,
    BackupSet,
    commit_file,
    fsync_dir,
    list_sets,
    manifest_path,
    parse_taken_at,
    partial_path,
    sha256_file,
    write_json,
)


def _period(moment: dt.datetime, tier: str) -> tuple[int, int]:
    if tier == "weekly":
        iso = moment.isocalendar()
        return iso.year, iso.week
    return moment.year, moment.month


def promote(new: BackupSet, tdir: Path, *, monthly: bool = False) -> list[BackupSet]:
    """Hard-link a new daily backup into weekly/ (and monthly/) when its period has none yet."""
    linked = []
    for tier in ("weekly", "monthly") if monthly else ("weekly",):
        period = _period(new.taken_at, tier)
        if any(_period(s.taken_at, tier) == period for s in list_sets(tdir, tier) if s.complete):
            continue
        (tdir / tier).mkdir(parents=True, exist_ok=True)
        dest = tdir / tier / new.data.name
        for src, dst in ((new.data, dest), (new.manifest, manifest_path(dest))):  # manifest last
            dst.unlink(missing_ok=True)
            os.link(src, dst)
        fsync_dir(tdir / tier)
        linked.append(BackupSet(dest, new.taken_at))
    return linked


def point_latest(new: BackupSet, tdir: Path) -> Path:
    """Swing the `latest` symlink to the new backup in one rename."""
    link, tmp = tdir / "latest", tdir / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(new.data.relative_to(tdir))
    os.replace(tmp, link)
    return link


def plan_retention(sets: list, keep: int) -> tuple[list, list]:
    """(kept, pruned): the newest `keep` complete sets stay; older ones and incomplete go.

    Works on anything with `taken_at` and `complete` (local sets, remote objects alike).
    """
    complete = sorted((s for s in sets if s.complete), key=lambda s: s.taken_at, reverse=True)
    kept = complete[:keep]
    newest_kept = kept[-1].taken_at if kept else None
    pruned = complete[keep:] + [
        s for s in sets if not s.complete and newest_kept and s.taken_at < newest_kept
    ]
    return kept, pruned


def apply_retention(tdir: Path, keep: dict[str, int]) -> tuple[list[BackupSet], list[BackupSet]]:
    """Delete what plan_retention prunes per tier, manifest first; (kept, pruned)."""
    all_kept, all_pruned = [], []
    for tier in TIERS:
        kept, pruned = plan_retention(list_sets(tdir, tier), max(keep.get(tier, 0), 0))
        for old in pruned:
            # Manifest first: a set half-deleted by a crash reads as incomplete, never as good.
            old.manifest.unlink(missing_ok=True)
            old.data.unlink(missing_ok=True)
        all_kept += kept
        all_pruned += pruned
    return all_kept, all_pruned


# ------------------------------------------------------------------ the whole local commit


@dataclass
class StoredBackup:
    """A backup committed on disk: its set, checksum, tiers it landed in, and what was pruned."""

    backup: BackupSet
    sha256: str
    size_bytes: int
    manifest: dict
    tiers: list[str]
    kept: list[BackupSet]
    pruned: list[BackupSet]


def store_backup(
    partial: Path,
    final: Path,
    manifest: dict,
    tdir: Path,
    keep: dict[str, int],
) -> StoredBackup:
    """Commit a finished partial file: rename, checksum, manifest last, tiers, latest, prune.

    Retention runs only after the new backup is in place with its manifest, so a failure
    anywhere before leaves every older backup as it was.
    """
    try:
        commit_file(partial, final)
        digest, size = sha256_file(final)
        manifest = {**manifest, "file": final.name, "sha256": digest, "size_bytes": size}
        write_json(manifest_path(final), manifest)
    except OSError as exc:
        # Not yet a backup (no manifest): remove our own file, touch nothing older.
        for path in (partial, final, partial_path(manifest_path(final))):
            path.unlink(missing_ok=True)
        raise BackupError(f"could not store {final}: {exc}") from None
    new = BackupSet(final, parse_taken_at(final))
    linked = promote(new, tdir, monthly=keep.get("monthly", 0) > 0)
    point_latest(new, tdir)
    kept, pruned = apply_retention(tdir, keep)
    return StoredBackup(
        new, digest, size, manifest, ["daily"] + [s.tier for s in linked], kept, pruned
    )
