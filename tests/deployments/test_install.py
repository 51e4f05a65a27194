"""The install command, run into a temporary root: units, environment files, twice, and undone."""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.install import main
from deployments.units import ROUTES, parse_env
from tasks.backups.postgres.target import resolve_targets
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
USER = pwd.getpwuid(os.geteuid()).pw_name  # a user that exists here, so ownership is checkable
API = "https://prefect.example.com/api"
AUTH = "admin:s3cret-Auth_string"


@pytest.fixture
def auth_file(tmp_path) -> Path:
    path = tmp_path / "auth"
    path.write_text(AUTH + "\n")
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    # A root that already holds something of its own, which install and uninstall must respect.
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/ssh.service").write_text("[Service]\nExecStart=/usr/sbin/sshd\n")
    (root / "etc/hostname").write_text("oracle-1\n")
    return root


def install(root: Path, route: str, *extra: str, capsys=None) -> str:
    main([route, "--root", str(root), "--user", USER, "--api-url", API, *extra])
    return capsys.readouterr().out if capsys else ""


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith("#"):
            key, value = line.split("=", 1)
            current.setdefault(key, []).append(value)
    return sections


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode, owner, content hash and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            digest,
            st.st_mtime_ns if path.is_file() else 0,
        )
    return out


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_worker_unit_runs_the_pools_worker_capped_and_restarted(root, auth_file, route):
    install(root, route, "--auth-string-file", str(auth_file))
    spec = ROUTES[route]
    service = unit(root / f"etc/systemd/system/investflow-worker-{route}.service")["Service"]

    assert service["ExecStart"] == [
        f"/opt/investflow/.venv/bin/prefect worker start --pool {route} --type {spec.worker_type} "
        f"--name {route}-%H --limit {spec.limit} --install-policy never "
        "--no-create-pool-if-not-found"
    ]
    assert service["MemoryMax"] == [spec.memory_max]
    assert service["Restart"] == ["always"]
    assert service["User"] == [USER]
    assert service["EnvironmentFile"] == [f"/etc/investflow/worker-{route}.env"]
    # It waits for the server, saying why in the journal, rather than crash-looping silently.
    assert "wait_for_server.py --pool " + route in service["ExecStartPre"][0]

    env_file = root / f"etc/investflow/worker-{route}.env"
    st = env_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == pwd.getpwnam(USER).pw_uid
    env = parse_env(env_file.read_text())
    assert env["PREFECT_API_AUTH_STRING"] == AUTH
    assert env["PREFECT_API_URL"] == API
    assert env["INVESTFLOW_CODE_DIR"] == "/opt/investflow"


def test_memory_caps_follow_each_nodes_budget(root):
    for route in ("oracle-osaka", "oracle-chuncheon", "oracle-mumbai"):
        install(root, route)
    caps = {
        route: unit(root / f"etc/systemd/system/investflow-worker-{route}.service")["Service"]
        for route in ("oracle-osaka", "oracle-chuncheon", "oracle-mumbai")
    }
    # osaka: a ~200 MB job plus the ~130 MB worker, one run at a time; the edge nodes ~400 MB.
    assert caps["oracle-osaka"]["MemoryMax"] == ["350M"]
    assert "--limit 1 " in caps["oracle-osaka"]["ExecStart"][0]
    assert caps["oracle-chuncheon"]["MemoryMax"] == caps["oracle-mumbai"]["MemoryMax"] == ["400M"]
    for service in caps.values():
        assert service["OOMPolicy"] == ["continue"]  # a killed job must not stop the worker


def test_ecs_worker_gets_the_aws_region(root):
    install(root, "fargate")
    env = parse_env((root / "etc/investflow/worker-fargate.env").read_text())
    assert env["AWS_DEFAULT_REGION"] == "ap-northeast-2"
    service = unit(root / "etc/systemd/system/investflow-worker-fargate.service")["Service"]
    assert "--type ecs" in service["ExecStart"][0]


def test_desktop_worker_starts_at_boot_and_after_wake(root):
    install(root, "gpu-desktop")
    units = root / "etc/systemd/system"
    main_unit = unit(units / "investflow-worker-gpu-desktop.service")
    assert main_unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert main_unit["Service"]["SupplementaryGroups"] == ["docker"]
    assert "docker.service" in main_unit["Unit"]["After"][0]
    resume = unit(units / "investflow-worker-gpu-desktop-resume.service")
    assert "suspend.target" in resume["Install"]["WantedBy"][0]
    assert resume["Service"]["ExecStart"] == [
        "/usr/bin/systemctl --no-block restart investflow-worker-gpu-desktop.service"
    ]


def test_osaka_backs_up_the_prefect_database_too(root):
    install(root, "oracle-osaka")
    env = parse_env((root / "etc/investflow/worker-oracle-osaka.env").read_text())
    settings = Settings(
        backup_database_urls=env["INVESTFLOW_BACKUP_DATABASE_URLS"],
        database_url=env["INVESTFLOW_DATABASE_URL"],
    )
    assert [t.dbname for t in resolve_targets(None, settings)] == ["investflow", "prefect"]


def test_server_route_guards_the_api_and_listens_on_loopback_only(root):
    install(root, "server")
    service = unit(root / "etc/systemd/system/prefect-server.service")["Service"]
    assert service["ExecStart"] == [
        "/opt/investflow/.venv/bin/prefect server start --no-background"
    ]
    assert service["Restart"] == ["always"]
    env_file = root / "etc/investflow/prefect-server.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = parse_env(env_file.read_text())
    # No string was given: a strong one was made, and the server's own CLI uses it too.
    assert env["PREFECT_SERVER_API_AUTH_STRING"].startswith("admin:")
    assert len(env["PREFECT_SERVER_API_AUTH_STRING"]) > 30
    assert env["PREFECT_API_AUTH_STRING"] == env["PREFECT_SERVER_API_AUTH_STRING"]
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith("/prefect")
    assert env["PREFECT_UI_API_URL"] == API
    conf = (root / "etc/nginx/conf.d/investflow-prefect.conf").read_text()
    assert "server 127.0.0.1:4200;" in conf
    assert "server_name prefect.example.com;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "/etc/letsencrypt/live/prefect.example.com/fullchain.pem" in conf
    # Ports 80 and 443 on every IPv4 and IPv6 address unless told otherwise.
    listens = [line.strip() for line in conf.splitlines() if line.strip().startswith("listen ")]
    assert listens == [
        "listen 80;",
        "listen [::]:80;",
        "listen 443 ssl http2;",
        "listen [::]:443 ssl http2;",
    ]
    assert "return 301 https://$host$request_uri;" in conf
    assert env["PREFECT_SERVER_API_PORT"] == "4200"


def test_nginx_ports_addresses_and_the_servers_port_are_options(root):
    install(root, "server", "--listen-address", "127.0.0.1", "--listen-address", "::1",
            "--http-port", "8080", "--https-port", "8443", "--server-port", "4300")  # fmt: skip
    conf_file = root / "etc/nginx/conf.d/investflow-prefect.conf"
    env_file = root / "etc/investflow/prefect-server.env"
    conf = conf_file.read_text()
    listens = [line.strip() for line in conf.splitlines() if line.strip().startswith("listen ")]
    assert listens == [
        "listen 127.0.0.1:8080;",
        "listen [::1]:8080;",
        "listen 127.0.0.1:8443 ssl http2;",
        "listen [::1]:8443 ssl http2;",
    ]
    # The redirect names the HTTPS port, which is not the default one.
    assert "return 301 https://$host:8443$request_uri;" in conf
    # nginx's upstream is where the server listens, and stays so on a plain reinstall.
    assert "server 127.0.0.1:4300;" in conf
    assert parse_env(env_file.read_text())["PREFECT_SERVER_API_PORT"] == "4300"
    install(root, "server")
    assert "server 127.0.0.1:4300;" in conf_file.read_text()
    assert parse_env(env_file.read_text())["PREFECT_SERVER_API_PORT"] == "4300"


@pytest.mark.parametrize(
    "options",
    [[], ["--listen-address", "127.0.0.1", "--https-port", "8443"]],
    ids=["default", "ports"],
)
def test_nginx_accepts_the_config(nginx, root, tmp_path, options):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=prefect.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    install(root, "server", "--tls-cert", str(cert), "--tls-key", str(key), *options)
    main_conf = tmp_path / "nginx.conf"
    main_conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{ access_log off; include {root}/etc/nginx/conf.d/*.conf; }}\n"
    )
    proc = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main_conf)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("route", ["server", "oracle-osaka", "fargate", "gpu-desktop"])
def test_systemd_accepts_the_units(systemd_analyze, root, route):
    # The real checkout as prefix, so systemd finds the executables it checks for.
    install(root, route, "--prefix", str(ROOT))
    units = sorted((root / "etc/systemd/system").glob("*prefect*")) + sorted(
        (root / "etc/systemd/system").glob("investflow-*")
    )
    proc = subprocess.run(
        [systemd_analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in proc.stderr.splitlines() if any(u.name in line for u in units)]
    assert proc.returncode == 0 and not ours, proc.stderr


def test_second_install_changes_nothing(root, auth_file, capsys):
    for route in ("server", "oracle-osaka", "gpu-desktop"):
        install(root, route, "--auth-string-file", str(auth_file), capsys=capsys)
    before = snapshot(root)
    for route in ("server", "oracle-osaka", "gpu-desktop"):
        out = install(root, route, "--auth-string-file", str(auth_file), capsys=capsys)
        assert f"{route}: unchanged" in out
        assert "created" not in out and "updated" not in out
    assert snapshot(root) == before  # same bytes, modes, owners and mtimes


def test_values_filled_in_on_the_machine_survive_a_reinstall(root, auth_file):
    install(root, "oracle-osaka", "--auth-string-file", str(auth_file))
    env_file = root / "etc/investflow/worker-oracle-osaka.env"
    text = env_file.read_text().replace(
        "postgresql://investflow:CHANGE_ME@127.0.0.1:5432/investflow\n",
        "postgresql://investflow:pw@127.0.0.1:5432/investflow\n",
    )
    env_file.write_text(text + "EXTRA_FROM_ADMIN=1\n")
    install(root, "oracle-osaka")  # no auth string given this time: the file's is kept
    env = parse_env(env_file.read_text())
    assert env["INVESTFLOW_DATABASE_URL"] == "postgresql://investflow:pw@127.0.0.1:5432/investflow"
    assert env["PREFECT_API_AUTH_STRING"] == AUTH
    assert env["EXTRA_FROM_ADMIN"] == "1"
    install(root, "oracle-osaka", "--set", "INVESTFLOW_REDIS_URL=redis://10.0.0.5:6379/1")
    assert parse_env(env_file.read_text())["INVESTFLOW_REDIS_URL"] == "redis://10.0.0.5:6379/1"


def test_uninstall_leaves_the_tree_as_it_was(root, auth_file, capsys):
    before = snapshot(root)
    for route in ("server", "fargate", "gpu-desktop"):
        install(root, route, "--auth-string-file", str(auth_file))
    assert snapshot(root) != before
    # Removing one route leaves the others whole.
    fargate_files = {p for p in snapshot(root) if "fargate" in p}
    main(["uninstall", "gpu-desktop", "--root", str(root)])
    assert fargate_files <= set(snapshot(root))
    assert not any("gpu-desktop" in p for p in snapshot(root))
    for route in ("fargate", "server"):
        main(["uninstall", route, "--root", str(root)])
    assert snapshot(root) == before


def test_a_file_it_did_not_write_is_not_overwritten(root):
    foreign = root / "etc/systemd/system/investflow-worker-oracle-mumbai.service"
    foreign.write_text("[Service]\nExecStart=/usr/local/bin/someone-elses\n")
    with pytest.raises(SystemExit, match="not written by this command"):
        install(root, "oracle-mumbai")
    assert "someone-elses" in foreign.read_text()
    install(root, "oracle-mumbai", "--force")
    main(["uninstall", "oracle-mumbai", "--root", str(root)])
    assert foreign.exists()  # it was there before: uninstall leaves it


def test_a_worker_that_cannot_reach_the_server_says_so(tmp_path):
    from tests.conftest import free_port

    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "deployments/services/wait_for_server.py"),
         "--pool", "gpu-desktop", "--timeout", "0.5", "--interval", "0.2"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot reach the Prefect server at {api}" in proc.stderr
    assert "retrying every" in proc.stderr
    assert AUTH not in proc.stderr
