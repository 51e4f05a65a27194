"""Install the Prefect server or one route's worker as systemd services; idempotent, undoable.

    python -m deployments.install ROUTE [--root DIR] [--user U] [--prefix DIR]
        [--api-url URL] [--auth-string-file F | --api-key-file F] [--set KEY=VALUE ...]
        [--server-name HOST] [--tls-cert F] [--tls-key F] [--server-port N]
        [--http-port N] [--https-port N] [--listen-address ADDR ...] [--no-systemctl] [--force]
    python -m deployments.install uninstall ROUTE [--root DIR] [--no-systemctl]

ROUTE is `server` (Prefect server unit, its environment file, nginx) or a work pool:
oracle-osaka, oracle-chuncheon, oracle-mumbai, fargate, gpu-desktop. Files are written under
--root (default /); a second run with the same options leaves every byte and mtime alone and
reports "unchanged"; values already in an environment file are kept. What was written is listed
in <root>/etc/investflow/installed-ROUTE.json, which `uninstall` uses to remove exactly that.
Only with --root / does it create the service user and call systemctl. What each route's
files hold is rendered by deployments/units.py; this module writes, enables and starts them.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

from deployments.units import ALL_ROUTES, CONF_DIR, STATE_DIR, plan, to_fill_in


def _owner(user: str) -> tuple[int, int] | None:
    """The service user's uid/gid when it exists here and we may chown to it."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        return None
    return entry.pw_uid, entry.pw_gid


def write_if_changed(path: Path, content: bytes, mode: int, owner: tuple[int, int] | None) -> str:
    """Write atomically only what differs (content, mode, owner); say what was done."""
    if path.exists():
        st = path.stat()
        same_owner = owner is None or (st.st_uid, st.st_gid) == owner
        if path.read_bytes() == content:
            if (st.st_mode & 0o7777) == mode and same_owner:
                return "unchanged"
            os.chmod(path, mode)
            if owner:
                os.chown(path, *owner)
            return "updated (mode/owner)"
        status = "updated"
    else:
        status = "created"
    tmp = path.with_name(f".{path.name}.tmp")
    # Created 0600 from the start: a secret is never readable by others, even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    if owner:
        os.chown(tmp, *owner)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return status


def _manifest_path(root: Path, route: str) -> Path:
    return root / CONF_DIR / f"installed-{route}.json"


def _systemctl(*args: str) -> None:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if proc.returncode:
        print(f"  systemctl {' '.join(args)}: {proc.stderr.strip()}", file=sys.stderr)


def install(route: str, opts: argparse.Namespace) -> list[str]:
    """Write the route's files where they differ, record them, and (live) start its units."""
    root = Path(opts.root)
    live = root.resolve() == Path("/") and not opts.no_systemctl
    mpath = _manifest_path(root, route)
    old = json.loads(mpath.read_text()) if mpath.exists() else {}
    report, user_created = [], old.get("user_created", False)
    if root.resolve() == Path("/") and _owner(opts.user) is None:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home",
             "--shell", "/usr/sbin/nologin", opts.user],
            check=True,
        )  # fmt: skip
        user_created = True
        report.append(f"user {opts.user}: created")
    owner = _owner(opts.user)
    files, units = plan(route, opts, root)
    dirs = list(old.get("dirs_created", []))
    preexisting = set(old.get("preexisting", []))
    for f in files:  # check everything before writing anything
        path = root / f.rel
        dirs += [str(p) for p in path.relative_to(root).parents[:-1] if not (root / p).exists()]
        if path.exists() and f.rel not in old.get("files", []):
            if not f.secret and path.read_text() != f.content and not opts.force:
                raise SystemExit(f"{path} exists and was not written by this command: "
                                 "move it away, or pass --force to replace it")  # fmt: skip
            preexisting.add(f.rel)  # adopted: uninstall leaves it where it was
    for rel in sorted(set(dirs), key=lambda d: d.count("/")):
        (root / rel).mkdir(mode=0o755, exist_ok=True)
    manifest = {
        "route": route,
        "user": opts.user,
        "user_created": user_created,
        # Paths only: a hash of an environment file would be a hash of its secrets.
        "files": [f.rel for f in files],
        "units": units,
        "dirs_created": sorted(set(dirs)),
        "preexisting": sorted(preexisting),
    }
    # The manifest first: an install cut short can still be uninstalled exactly.
    mstatus = write_if_changed(mpath, (json.dumps(manifest, indent=2) + "\n").encode(), 0o600, None)
    changed = []
    for f in files:
        path = root / f.rel
        status = write_if_changed(path, f.content.encode(), f.mode, owner if f.secret else None)
        report.append(f"{path}: {status}")
        if status != "unchanged":
            changed.append(f.rel)
        if f.secret and (todo := to_fill_in(f.content)):
            report.append(f"  still to fill in there if this machine needs them: {todo}")
    if live:
        _start(units, changed)
    if not changed and mstatus == "unchanged":
        report.append(f"{route}: unchanged")
    return report


def _start(units: list[str], changed: list[str]) -> None:
    """Enable and start the main unit, restarting it when its files changed; reload nginx."""
    if changed:
        _systemctl("daemon-reload")
    _systemctl("enable", "--now", "--no-block", units[0])
    for extra in units[1:]:
        _systemctl("enable", extra)
    if changed:
        _systemctl("try-restart", "--no-block", units[0])
    if any(rel.startswith("etc/nginx/") for rel in changed):
        _reload_nginx()


def _reload_nginx() -> None:
    test = subprocess.run(["nginx", "-t"], capture_output=True, text=True)
    if test.returncode:
        print(f"  nginx -t failed, not reloaded:\n{test.stderr}", file=sys.stderr)
    else:
        _systemctl("reload-or-restart", "nginx")


def uninstall(route: str, opts: argparse.Namespace) -> list[str]:
    """Stop the route's units and remove exactly what its manifest lists."""
    root = Path(opts.root)
    live = root.resolve() == Path("/") and not opts.no_systemctl
    mpath = _manifest_path(root, route)
    if not mpath.exists():
        return [f"{route}: not installed under {root}"]
    manifest = json.loads(mpath.read_text())
    if live:
        for unit in manifest["units"]:
            _systemctl("disable", "--now", unit)
    report = []
    for rel in manifest["files"]:
        path = root / rel
        if rel in manifest["preexisting"]:
            report.append(f"{path}: kept (it was there before the install)")
        elif path.exists():
            path.unlink()
            report.append(f"{path}: removed")
    mpath.unlink()
    left = []
    for rel in sorted(manifest["dirs_created"], key=lambda d: d.count("/"), reverse=True):
        try:
            (root / rel).rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(rel)  # still holds another route's files
    _hand_over(root, left, manifest["user_created"], manifest["user"], live, report)
    if live:
        _systemctl("daemon-reload")
        if any(rel.startswith("etc/nginx/") for rel in manifest["files"]):
            _reload_nginx()
    return report


def _hand_over(root: Path, dirs: list[str], user_created: bool, user: str, live: bool, report):
    """Leave what other routes still use to one of them; remove the user when the last goes."""
    others = (
        sorted((root / CONF_DIR).glob("installed-*.json")) if (root / CONF_DIR).is_dir() else []
    )
    if others:
        heir = json.loads(others[0].read_text())
        heir["dirs_created"] = sorted(set(heir["dirs_created"]) | set(dirs))
        heir["user_created"] = heir["user_created"] or user_created
        write_if_changed(others[0], (json.dumps(heir, indent=2) + "\n").encode(), 0o600, None)
    elif user_created and live:
        subprocess.run(["userdel", user], check=False)
        report.append(f"user {user}: removed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.install", description=__doc__)
    parser.add_argument("route", choices=[*ALL_ROUTES, "uninstall"])
    parser.add_argument("target", nargs="?", choices=ALL_ROUTES, help="the route to uninstall")
    parser.add_argument("--root", default="/", help="write under this folder (default /)")
    parser.add_argument("--user", default="investflow", help="the service user")
    parser.add_argument("--prefix", default="/opt/investflow", help="the checkout with its .venv")
    parser.add_argument("--api-url", help="the Prefect API, e.g. https://prefect.example.com/api")
    parser.add_argument("--ui-url", help="default: the API URL without /api")
    parser.add_argument("--auth-string-file", help="file holding the basic-auth string user:pass")
    parser.add_argument("--api-key-file", help="file holding a Prefect Cloud API key")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a value for the environment file (repeatable)")  # fmt: skip
    parser.add_argument("--server-name", help="nginx server_name (default: the API URL's host)")
    parser.add_argument("--tls-cert", help="certificate (default: certbot's fullchain.pem)")
    parser.add_argument("--tls-key", help="private key (default: certbot's privkey.pem)")
    parser.add_argument("--server-port", type=int, help="the Prefect server's loopback port "
                        "(default: the environment file's, else 4200)")  # fmt: skip
    parser.add_argument("--http-port", type=int, default=80, help="nginx's redirect to HTTPS")
    parser.add_argument("--https-port", type=int, default=443, help="nginx's TLS port")
    parser.add_argument("--listen-address", action="append", default=[], metavar="ADDR",
                        help="nginx's address (repeatable; default: every one)")  # fmt: skip
    parser.add_argument("--no-systemctl", action="store_true", help="write files only")
    parser.add_argument("--force", action="store_true", help="replace files this did not write")
    opts = parser.parse_args(argv)
    if any("=" not in kv for kv in opts.set):
        parser.error("--set takes KEY=VALUE")
    if opts.route == "uninstall":
        if not opts.target:
            parser.error("uninstall needs a route")
        lines = uninstall(opts.target, opts)
    else:
        lines = install(opts.route, opts)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
