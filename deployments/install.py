"""Install the Prefect server or one route's worker as systemd services; idempotent, undoable.

    python -m deployments.install ROUTE [--root DIR] [--user U] [--prefix DIR]
        [--api-url URL] [--auth-string-file F | --api-key-file F] [--set KEY=VALUE ...]
        [--server-name HOST] [--tls-cert F] [--tls-key F] [--no-systemctl] [--force]
    python -m deployments.install uninstall ROUTE [--root DIR] [--no-systemctl]

ROUTE is `server` (Prefect server unit, its environment file, nginx) or a work pool:
oracle-osaka, oracle-chuncheon, oracle-mumbai, fargate, gpu-desktop. Files are written under
--root (default /); a second run with the same options leaves every byte and mtime alone and
reports "unchanged"; values already in an environment file are kept. What was written is listed
in <root>/etc/investflow/installed-ROUTE.json, which `uninstall` uses to remove exactly that.
Only with --root / does it create the service user and call systemctl.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
SERVICES, SERVER = HERE / "services", HERE / "server"
UNIT_DIR, CONF_DIR = "etc/systemd/system", "etc/investflow"
STATE_DIR = "/var/lib/investflow"  # the service user's home; systemd's StateDirectory=investflow


@dataclass(frozen=True)
class WorkerRoute:
    """How one work pool's worker runs on its machine (budgets from DESIGN.md)."""

    worker_type: str
    memory_max: str
    memory_high: str
    limit: int
    memory_note: str


ROUTES = {
    "oracle-osaka": WorkerRoute(
        "process",
        "350M",
        "320M",
        1,
        "a job's ~200 MB budget plus ~150 MB for the worker itself (measured ~130 MB RSS); "
        "one run at a time beside the 600-800 MB database",
    ),
    "oracle-chuncheon": WorkerRoute(
        "process",
        "400M",
        "368M",
        2,
        "the node's ~400 MB for the worker (~130 MB) and up to two light runs",
    ),
    "oracle-mumbai": WorkerRoute(
        "process", "400M", "368M", 2, "the node's ~400 MB for the worker and two light runs"
    ),
    "fargate": WorkerRoute(
        "ecs", "512M", "448M", 10, "the worker only; each run is its own Fargate task"
    ),
    "gpu-desktop": WorkerRoute(
        "docker", "512M", "448M", 1, "the worker only; one GPU job at a time on the 8 GB card"
    ),
}
ALL_ROUTES = ("server", *ROUTES)
_TOKEN = re.compile(r"@([A-Z_]+)@")
_ASSIGN = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./~^!*?&-]*")


@dataclass(frozen=True)
class File:
    rel: str  # path under the root
    content: str
    mode: int
    secret: bool = False  # owned by the service user, mode 0600


def render(template: str, values: dict[str, str]) -> str:
    """Replace @NAME@ tokens; a token without a value is a bug in the route table."""
    return _TOKEN.sub(lambda m: values[m.group(1)], template)


def quote(value: str) -> str:
    """A value as systemd's EnvironmentFile parser reads it back unchanged."""
    if _PLAIN.fullmatch(value):
        return value
    if "'" in value or "\n" in value or "\\" in value:
        raise SystemExit("a setting value may not contain a quote, backslash or newline")
    return f"'{value}'"


def parse_env(text: str) -> dict[str, str]:
    """KEY -> raw value of each uncommented assignment."""
    return {m[1]: m[2] for line in text.splitlines() if (m := _ASSIGN.match(line))}


def merge_env(template: str, existing: str | None, explicit: dict[str, str]) -> str:
    """The template's lines with values given now > values already in the file > defaults.

    An empty value is written as "#KEY=" (to be filled in); keys the file has beyond the
    template are kept at the end.
    """
    old = parse_env(existing or "")
    out, seen = [], set()
    for line in template.splitlines():
        match = _ASSIGN.match(line)
        if not match:
            out.append(line)
            continue
        key, default = match[1], match[2]
        seen.add(key)
        raw = quote(explicit[key]) if key in explicit else old.get(key, quote(default))
        out.append(f"{key}={raw}" if raw not in ("", "''") else f"#{key}=")
    extra = [f"{k}={v}" for k, v in old.items() if k not in seen]
    extra += [f"{k}={quote(v)}" for k, v in sorted(explicit.items()) if k not in seen | set(old)]
    if extra:
        out += ["", "# Added on this machine (kept by the install command):", *extra]
    return "\n".join(out) + "\n"


def _read_secret(path: str | None) -> str | None:
    return Path(path).read_text().strip() if path else None


def plan(route: str, opts: argparse.Namespace, root: Path) -> tuple[list[File], list[str]]:
    """The files this route needs (content and mode), and the units to enable."""
    prefix = opts.prefix.rstrip("/")
    api_url = (opts.api_url or "").rstrip("/")
    ui_url = opts.ui_url or (api_url.removesuffix("/api") if api_url else "")
    values = {
        "USER": opts.user,
        "PREFIX": prefix,
        "PYTHON": f"{prefix}/.venv/bin/python",
        "PREFECT": f"{prefix}/.venv/bin/prefect",
        "STATE_DIR": STATE_DIR,
        "API_URL": api_url,
        "UI_URL": ui_url,
        "POOL": route,
    }
    explicit = dict(kv.split("=", 1) for kv in opts.set)
    auth, api_key = _read_secret(opts.auth_string_file), _read_secret(opts.api_key_file)
    if route == "server":
        env_rel = f"{CONF_DIR}/prefect-server.env"
        existing = _existing(root / env_rel)
        if auth is None and "PREFECT_SERVER_API_AUTH_STRING" not in parse_env(existing or ""):
            auth = f"admin:{secrets.token_urlsafe(24)}"  # new server, no string given: make one
        if auth is not None:
            explicit |= {"PREFECT_SERVER_API_AUTH_STRING": auth, "PREFECT_API_AUTH_STRING": auth}
        host = opts.server_name or urlsplit(api_url).hostname or "prefect.example.com"
        values |= {
            "ENV_FILE": f"/{env_rel}",
            "AUTH_STRING": auth or "",
            "DATABASE_URL": "postgresql+asyncpg://prefect:CHANGE_ME@DATA_NODE:5432/prefect",
            "PORT": "4200",
            "SERVER_NAME": host,
            "TLS_CERT": opts.tls_cert or f"/etc/letsencrypt/live/{host}/fullchain.pem",
            "TLS_KEY": opts.tls_key or f"/etc/letsencrypt/live/{host}/privkey.pem",
        }
        env = merge_env(
            render((SERVER / "prefect-server.env.example").read_text(), values),
            existing,
            explicit,
        )
        files = [
            File(
                f"{UNIT_DIR}/prefect-server.service",
                _tpl(SERVER / "prefect-server.service", values),
                0o644,
            ),
            File(env_rel, env, 0o600, secret=True),
            File(
                "etc/nginx/conf.d/investflow-prefect.conf",
                _tpl(SERVER / "nginx.conf", values),
                0o644,
            ),
        ]
        return files, ["prefect-server.service"]

    spec = ROUTES[route]
    env_rel = f"{CONF_DIR}/worker-{route}.env"
    unit = f"investflow-worker-{route}.service"
    if auth is not None:
        explicit["PREFECT_API_AUTH_STRING"] = auth
    if api_key is not None:
        explicit["PREFECT_API_KEY"] = api_key
    values |= {
        "ENV_FILE": f"/{env_rel}",
        "AUTH_STRING": "",
        "API_KEY": "",
        "MEMORY_MAX": spec.memory_max,
        "MEMORY_HIGH": spec.memory_high,
        "LIMIT": str(spec.limit),
        "MEMORY_NOTE": textwrap.fill(
            f"MemoryMax={spec.memory_max}: {spec.memory_note}.", 92, subsequent_indent="#   "
        ),
    }
    template = _tpl(SERVICES / "common.env.in", values) + _tpl(SERVICES / f"{route}.env.in", values)
    files = [
        File(
            f"{UNIT_DIR}/{unit}",
            _tpl(SERVICES / f"worker-{spec.worker_type}.service.in", values),
            0o644,
        ),
        File(env_rel, merge_env(template, _existing(root / env_rel), explicit), 0o600, secret=True),
    ]
    units = [unit]
    if spec.worker_type == "docker":  # the desktop sleeps: restart the worker when it wakes
        resume = f"investflow-worker-{route}-resume.service"
        files.append(
            File(f"{UNIT_DIR}/{resume}", _tpl(SERVICES / "worker-resume.service.in", values), 0o644)
        )
        units.append(resume)
    return files, units


def _to_fill_in(env_text: str) -> str:
    """The settings an environment file still lacks (commented out, or CHANGE_ME)."""
    values = parse_env(env_text)
    todo = re.findall(r"^#([A-Z_][A-Z0-9_]*)=$", env_text, re.M)
    todo += [k for k, v in values.items() if "CHANGE_ME" in v]
    # One of the two credentials is enough: the auth string (self-hosted) or a Cloud API key.
    if "PREFECT_API_KEY" in values or "PREFECT_API_AUTH_STRING" in values:
        todo = [k for k in todo if k not in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")]
    return ", ".join(todo)


def _tpl(path: Path, values: dict[str, str]) -> str:
    return render(path.read_text(), values)


def _existing(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


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
        if f.secret and (todo := _to_fill_in(f.content)):
            report.append(f"  still to fill in there if this machine needs them: {todo}")
    if live:
        if changed:
            _systemctl("daemon-reload")
        _systemctl("enable", "--now", "--no-block", units[0])
        for extra in units[1:]:
            _systemctl("enable", extra)
        if changed:
            _systemctl("try-restart", "--no-block", units[0])
        if any(rel.startswith("etc/nginx/") for rel in changed):
            _reload_nginx()
    if not changed and mstatus == "unchanged":
        report.append(f"{route}: unchanged")
    return report


def _reload_nginx() -> None:
    test = subprocess.run(["nginx", "-t"], capture_output=True, text=True)
    if test.returncode:
        print(f"  nginx -t failed, not reloaded:\n{test.stderr}", file=sys.stderr)
    else:
        _systemctl("reload-or-restart", "nginx")


def uninstall(route: str, opts: argparse.Namespace) -> list[str]:
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
