"""Backup files on disk: names, atomic writes, sha256 and manifests, the folder layout, checks.

How new backups are linked into tiers and pruned is in tasks/backups/retention.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks import clock

CHUNK = 1 << 20  # 1 MiB: streamed, so a dump of any size costs the same memory
TIERS = ("daily", "weekly", "monthly")
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_PREFIX = ".partial-"
_STAMP = "%Y%m%dT%H%M%SZ"
_STAMP_RE = re.compile(r"-(\d{8}T\d{6}Z)$")


class BackupError(RuntimeError):
    """A backup or verification failed; the message says which file or target and why."""


class BackupConnectionLost(BackupError):
    """The database went away under a dump (a restart, a crash): retried, and safe to rerun."""

    connection_lost = True


@dataclass(frozen=True)
class BackupSet:
    """One backup in one tier: its data file and the manifest that marks it complete."""

    data: Path
    taken_at: dt.datetime

    @property
    def manifest(self) -> Path:
        return manifest_path(self.data)

    @property
    def tier(self) -> str:
        return self.data.parent.name

    @property
    def complete(self) -> bool:
        return self.manifest.exists()


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(_STAMP)


def manifest_path(data: Path) -> Path:
    """`name-20260101T000000Z.dump` -> `name-20260101T000000Z.manifest.json`."""
    return data.with_name(data.name.removesuffix(data.suffix) + MANIFEST_SUFFIX)


def parse_taken_at(data: Path) -> dt.datetime | None:
    """The moment in a backup's file name, or None when the name is not one of ours."""
    match = _STAMP_RE.search(data.name.removesuffix(data.suffix))
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), _STAMP).replace(tzinfo=dt.UTC)


def partial_path(final: Path) -> Path:
    """Where a file is written before it is whole: hidden, and never counted as a backup."""
    return final.with_name(PARTIAL_PREFIX + final.name)


# ------------------------------------------------------------------ atomic writes and hashes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(partial: Path, final: Path) -> None:
    """fsync the finished partial file, then rename it into place, so a crash leaves no half."""
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    fsync_dir(final.parent)


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) read in chunks, never the whole file at once."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_json(final: Path, payload: dict) -> None:
    """Write JSON through a partial file, fsynced and renamed into place."""
    partial = partial_path(final)
    try:
        partial.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        commit_file(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_manifest(data: Path) -> dict:
    return json.loads(manifest_path(data).read_text())


# ------------------------------------------------------------------ layout


def target_dir(root: Path, kind: str, name: str) -> Path:
    """`<root>/<kind>/<name>/` with daily/, weekly/, monthly/ and the `latest` pointer."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "default"
    return Path(root) / kind / safe


def new_data_path(tdir: Path, name: str, moment: dt.datetime, suffix: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "default"
    return tdir / "daily" / f"{safe}-{stamp(moment)}{suffix}"


def fresh_data_path(tdir: Path, name: str, suffix: str) -> Path:
    """A daily path no backup uses yet; names have 1 s resolution, so wait out a clash.

    A clock that does not move on (set back, or stopped) would clash forever: after a few
    seconds the clash is an error that names the file.
    """
    deadline = clock.monotonic() + 3
    while True:
        path = new_data_path(tdir, name, clock.now(), suffix)
        if not path.exists() and not manifest_path(path).exists():
            return path
        if clock.monotonic() > deadline:
            raise BackupError(f"a backup named {path.name} already exists")
        clock.sleep(0.2)


def list_sets(tdir: Path, tier: str) -> list[BackupSet]:
    """Backups of one tier, newest first (partial files and manifests are not backups)."""
    folder = tdir / tier
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.name.endswith(MANIFEST_SUFFIX):
            continue
        taken_at = parse_taken_at(path)
        if taken_at is not None:
            found.append(BackupSet(path, taken_at))
    return sorted(found, key=lambda s: s.taken_at, reverse=True)


def clear_partials(tdir: Path) -> list[Path]:
    """Delete partial files a killed run left behind (call under target_lock only)."""
    removed = []
    for tier in TIERS:
        folder = tdir / tier
        if folder.is_dir():
            for path in folder.glob(PARTIAL_PREFIX + "*"):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@contextlib.contextmanager
def target_lock(tdir: Path) -> Iterator[None]:
    """One backup of a target at a time; a second run fails at once instead of interleaving."""
    for tier in TIERS[:2]:
        (tdir / tier).mkdir(parents=True, exist_ok=True)
    with open(tdir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup of {tdir} is running; try again later") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_free_space(tdir: Path, need_bytes: int) -> None:
    """Refuse to start when the disk cannot hold the new backup (estimated from the last one)."""
    free = shutil.disk_usage(tdir).free
    if free < need_bytes:
        raise BackupError(
            f"not enough free disk space under {tdir}: {free:,} bytes free, "
            f"about {need_bytes:,} needed; nothing was deleted"
        )


def newest_complete(tdir: Path) -> BackupSet | None:
    """The newest daily backup that has its manifest, or None when there is none yet."""
    return next((s for s in list_sets(tdir, "daily") if s.complete), None)


def estimate_size(tdir: Path, margin: float = 1.2) -> int:
    """The newest backup's size plus a margin (0 when there is none yet)."""
    newest = newest_complete(tdir)
    return int(newest.data.stat().st_size * margin) if newest else 0


# ------------------------------------------------------------------ checksum verification


def retained_sets(root: Path) -> list[BackupSet]:
    """Every backup under root, in every target and tier (for checksum verification)."""
    found = []
    for kind_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()) if root.exists() else []:
        for tdir in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
            for tier in TIERS:
                found += list_sets(tdir, tier)
    return found


def verify_set(bset: BackupSet) -> str | None:
    """None when the file matches its manifest's size and sha256, else what differs."""
    if not bset.complete:
        return f"{bset.data}: no manifest (an incomplete backup)"
    manifest = read_manifest(bset.data)
    digest, size = sha256_file(bset.data)
    if size != manifest.get("size_bytes"):
        return f"{bset.data}: size {size} != manifest {manifest.get('size_bytes')}"
    if digest != manifest.get("sha256"):
        return f"{bset.data}: sha256 {digest} != manifest {manifest.get('sha256')}"
    return None
