"""What `python -m deployments.install` writes for a route, rendered but not written.

The server route gets its systemd unit, its environment file and nginx's site; a worker route
its unit (plus a resume unit on the desktop) and an environment file from
deployments/services/*.in. Rendering reads the environment file already on the machine, if
any, so values filled in there are kept; it never writes (deployments/install.py does).
"""

from __future__ import annotations

import argparse
import re
import secrets
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deployments.pools import worker_command

HERE = Path(__file__).resolve().parent
SERVICES, SERVER = HERE / "services", HERE / "server"
UNIT_DIR, CONF_DIR = "etc/systemd/system", "etc/investflow"
STATE_DIR = "/var/lib/investflow"  # the service user's home; systemd's StateDirectory=investflow


@dataclass(frozen=True)
class WorkerRoute:
    """How one work pool's worker runs on its machine (budgets as in deployments/pools.py)."""

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


def to_fill_in(env_text: str) -> str:
    """The settings an environment file still lacks (commented out, or CHANGE_ME)."""
    values = parse_env(env_text)
    todo = re.findall(r"^#([A-Z_][A-Z0-9_]*)=$", env_text, re.M)
    todo += [k for k, v in values.items() if "CHANGE_ME" in v]
    # One of the two credentials is enough: the auth string (self-hosted) or a Cloud API key.
    if "PREFECT_API_KEY" in values or "PREFECT_API_AUTH_STRING" in values:
        todo = [k for k in todo if k not in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")]
    return ", ".join(todo)


def plan(route: str, opts: argparse.Namespace, root: Path) -> tuple[list[File], list[str]]:
    """The files this route needs (content and mode), and the units to enable."""
    prefix = opts.prefix.rstrip("/")
    api_url = (opts.api_url or "").rstrip("/")
    values = {
        "USER": opts.user,
        "PREFIX": prefix,
        "PYTHON": f"{prefix}/.venv/bin/python",
        "PREFECT": f"{prefix}/.venv/bin/prefect",
        "STATE_DIR": STATE_DIR,
        "API_URL": api_url,
        "UI_URL": opts.ui_url or (api_url.removesuffix("/api") if api_url else ""),
        "POOL": route,
    }
    explicit = dict(kv.split("=", 1) for kv in opts.set)
    auth, api_key = _read_secret(opts.auth_string_file), _read_secret(opts.api_key_file)
    if route == "server":
        return _server_plan(opts, root, values, explicit, auth)
    if auth is not None:
        explicit["PREFECT_API_AUTH_STRING"] = auth
    if api_key is not None:
        explicit["PREFECT_API_KEY"] = api_key
    return _worker_plan(route, root, values, explicit)


def _server_plan(
    opts, root: Path, values: dict, explicit: dict, auth: str | None
) -> tuple[list[File], list[str]]:
    env_rel = f"{CONF_DIR}/prefect-server.env"
    existing = _existing(root / env_rel)
    if auth is None and "PREFECT_SERVER_API_AUTH_STRING" not in parse_env(existing or ""):
        auth = f"admin:{secrets.token_urlsafe(24)}"  # new server, no string given: make one
    if auth is not None:
        explicit |= {"PREFECT_SERVER_API_AUTH_STRING": auth, "PREFECT_API_AUTH_STRING": auth}
    host = opts.server_name or urlsplit(values["API_URL"]).hostname or "prefect.example.com"
    # nginx's upstream and the server's own port are one value: given now, else the file's.
    port = opts.server_port or parse_env(existing or "").get("PREFECT_SERVER_API_PORT") or 4200
    explicit["PREFECT_SERVER_API_PORT"] = str(port)
    values |= {
        "ENV_FILE": f"/{env_rel}",
        "AUTH_STRING": auth or "",
        "DATABASE_URL": "postgresql+asyncpg://prefect:CHANGE_ME@DATA_NODE:5432/prefect",
        "PORT": str(port),
        "SERVER_NAME": host,
        "TLS_CERT": opts.tls_cert or f"/etc/letsencrypt/live/{host}/fullchain.pem",
        "TLS_KEY": opts.tls_key or f"/etc/letsencrypt/live/{host}/privkey.pem",
        "LISTEN_HTTP": _listen(opts.listen_address, opts.http_port, ""),
        "LISTEN_HTTPS": _listen(opts.listen_address, opts.https_port, " ssl http2"),
        # The redirect keeps a non-standard HTTPS port, or it would send clients to 443.
        "HTTPS_ORIGIN": "https://$host" + (f":{opts.https_port}" if opts.https_port != 443 else ""),
    }
    env = merge_env(_tpl(SERVER / "prefect-server.env.example", values), existing, explicit)
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


def _listen(addresses: list[str], port: int, params: str) -> str:
    """nginx `listen` lines for port on each address (none given: every IPv4 and IPv6 one)."""
    binds = [f"[{a.strip('[]')}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
    return "\n    ".join(f"listen {b}{params};" for b in binds or [port, f"[::]:{port}"])


def _worker_plan(
    route: str, root: Path, values: dict, explicit: dict
) -> tuple[list[File], list[str]]:
    spec = ROUTES[route]
    env_rel = f"{CONF_DIR}/worker-{route}.env"
    unit = f"investflow-worker-{route}.service"
    values |= {
        "ENV_FILE": f"/{env_rel}",
        "AUTH_STRING": "",
        "API_KEY": "",
        "MEMORY_MAX": spec.memory_max,
        "MEMORY_HIGH": spec.memory_high,
        "WORKER_COMMAND": shlex.join(
            worker_command(values["PREFECT"], route, f"{route}-%H", spec.worker_type, spec.limit)
        ),
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


def _read_secret(path: str | None) -> str | None:
    return Path(path).read_text().strip() if path else None


def _tpl(path: Path, values: dict[str, str]) -> str:
    return render(path.read_text(), values)


def _existing(path: Path) -> str | None:
    return path.read_text() if path.exists() else None
