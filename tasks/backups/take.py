"""The one way a backup is taken, whatever it dumps: lock, clear, check space, dump, store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tasks.backups.files import (
    clear_partials,
    ensure_free_space,
    estimate_size,
    fresh_data_path,
    partial_path,
    target_dir,
    target_lock,
)
from tasks.backups.retention import StoredBackup, store_backup

# dump(partial, final): write the new backup into partial (final is where it will land) and
# return its manifest; raise BackupError saying what failed.
Dump = Callable[[Path, Path], dict]


def take_backup(
    root: Path, kind: str, name: str, suffix: str, keep: dict[str, int], dump: Dump
) -> StoredBackup:
    """Back up one target into <root>/<kind>/<name>/ and keep it (tasks/backups/retention.py).

    Under the target's lock, so a second run fails at once: partial files a killed run left
    are cleared, the disk must hold about the last backup's size, and the new file gets a name
    no backup has. A dump that fails leaves no partial file and every older backup as it was.
    """
    tdir = target_dir(root, kind, name)
    with target_lock(tdir):
        clear_partials(tdir)
        ensure_free_space(tdir, estimate_size(tdir))
        final = fresh_data_path(tdir, name, suffix)
        partial = partial_path(final)
        try:
            manifest = dump(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return store_backup(partial, final, manifest, tdir, keep)
