"""investflow's machines as hosts of their own: Linux network namespaces joined by veth links.

The picture (one namespace per machine, named ivf<run>-<host>; addresses 10.<net>.<n>.2):

                              +----------------------- ivf<run>-net ------------------------+
                              |  "the internet": a router, nothing else (ip_forward on)     |
                              +--.1-------.1----------.1------------.1------------.1--------+
      this test (operator,       |         |            |              |             |   .9.1
      stand-ins: webhook)   aws .1.2  desktop .2.2   osaka .3.2   chuncheon .4.2  mumbai .5.2
      10.<net>.9.2 ------    Seoul      Korea, NAT   Osaka         Korea          Mumbai
                             server     gpu-desktop  oracle-osaka  oracle-        oracle-mumbai
                             fargate    worker       worker,       chuncheon      worker
                             worker                  PostgreSQL,   worker
                                                     Redis

Every worker only connects outward, to the server on the aws host; the flows reach the data
node's PostgreSQL and Redis across the same links. Each link carries the one-way delay of its
machine to Seoul (tc netem) where the kernel has netem; where it has not (some containers) the
links are instant and `Topology.delays` says so. A fault is done to a host as it happens to the
machine: `cut` takes its link down (a lost route), `freeze` stops every process in it with
SIGSTOP (a closed lid), `heal`/`thaw` undo them.

Names carry the run's id (ivf + 6 hex digits), so parallel runs never collide; `down()` removes
every namespace, process and cluster, and `sweep()` removes whatever a run of this process left.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PREFIX = "ivf"
SERVER_PORT = 4200
_MADE: set[str] = set()  # run ids made by this process, for sweep()


@dataclass(frozen=True)
class Host:
    name: str
    n: int  # third octet of its address
    letter: str  # in veth names (15 characters at most)
    delay_ms: int  # one-way, to Seoul
    pool: str | None  # the work pool its worker serves


# The platform of DESIGN.md. Delays: half the usual round trip to Seoul.
HOSTS = {
    h.name: h
    for h in (
        Host("aws", 1, "a", 1, "fargate"),  # ap-northeast-2, Seoul: the server and the ECS worker
        Host("desktop", 2, "d", 4, "gpu-desktop"),  # home in Korea, behind NAT
        Host("osaka", 3, "o", 14, "oracle-osaka"),  # the data node
        Host("chuncheon", 4, "c", 3, "oracle-chuncheon"),
        Host("mumbai", 5, "m", 65, "oracle-mumbai"),
    )
}
OPERATOR_N = 9


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "the topology tests make network namespaces, which needs root"
    if not shutil.which("ip"):
        return "`ip` (iproute2) is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = _sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _sh("ip", "netns", "del", probe, check=False)
    return None


def _free_net() -> int:
    """A second octet whose 10.x.0.0/16 no route of this machine uses."""
    routes = _sh("ip", "-4", "route", "show").stdout + _sh("ip", "-4", "addr", "show").stdout
    choices = list(range(200, 250))
    random.shuffle(choices)
    for x in choices:
        if f"10.{x}." not in routes:
            return x
    raise RuntimeError("no free 10.x.0.0/16 for the topology's links")


class Topology:
    """The hosts, their links and the processes started in them; a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.net = _free_net()
        self.workdir = Path(workdir)
        self.procs: list[tuple[subprocess.Popen, object]] = []
        self.delays = False
        self.pg_data: Path | None = None
        self.server: subprocess.Popen | None = None
        self.server_env: dict = {}

    # -- names and addresses
    def ns(self, host: str) -> str:
        return f"{PREFIX}{self.run}-{host}"

    def addr(self, host: str) -> str:
        n = OPERATOR_N if host == "operator" else HOSTS[host].n
        return f"10.{self.net}.{n}.2"

    def _veth(self, letter: str, side: str) -> str:
        return f"{PREFIX}{self.run}{letter}{side}"  # side h: the router's end; n: the host's

    def wrap(self, host: str):
        """The prefix that runs a command inside host (stack.worker's `wrap`)."""
        return lambda args: ["ip", "netns", "exec", self.ns(host), *args]

    @property
    def api_url(self) -> str:
        return f"http://{self.addr('aws')}:{SERVER_PORT}/api"

    # -- links
    def up(self) -> Topology:
        _MADE.add(self.run)
        hub = self.ns("net")
        _sh("ip", "netns", "add", hub)
        _sh("ip", "netns", "exec", hub, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _sh("ip", "-n", hub, "link", "set", "lo", "up")
        for host in HOSTS.values():
            ns, h, n = (
                self.ns(host.name),
                self._veth(host.letter, "h"),
                self._veth(host.letter, "n"),
            )
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "link", "add", h, "netns", hub, "type", "veth", "peer", "name", n,
                "netns", ns)  # fmt: skip
            _sh("ip", "-n", hub, "addr", "add", f"10.{self.net}.{host.n}.1/24", "dev", h)
            _sh("ip", "-n", ns, "addr", "add", f"{self.addr(host.name)}/24", "dev", n)
            _sh("ip", "-n", hub, "link", "set", h, "up")
            _sh("ip", "-n", ns, "link", "set", n, "up")
            _sh("ip", "-n", ns, "route", "add", "default", "via", f"10.{self.net}.{host.n}.1")
            self.delays = self._delay(ns, n, host.delay_ms)
        # This process is the operator's terminal, and where the stand-ins of internet services
        # (the alert webhook) listen: a link from here to the router.
        h, n = self._veth("x", "h"), self._veth("x", "n")
        _sh("ip", "link", "add", h, "netns", hub, "type", "veth", "peer", "name", n)
        _sh("ip", "-n", hub, "addr", "add", f"10.{self.net}.{OPERATOR_N}.1/24", "dev", h)
        _sh("ip", "addr", "add", f"{self.addr('operator')}/24", "dev", n)
        _sh("ip", "-n", hub, "link", "set", h, "up")
        _sh("ip", "link", "set", n, "up")
        _sh("ip", "route", "add", f"10.{self.net}.0.0/16", "via", f"10.{self.net}.{OPERATOR_N}.1")
        return self

    @staticmethod
    def _delay(ns: str, dev: str, ms: int) -> bool:
        netem = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem"]
        return _sh(*netem, "delay", f"{ms}ms", check=False).returncode == 0

    def cut(self, host: str) -> None:
        """The host loses its route: its link to the router goes down."""
        _sh("ip", "-n", self.ns("net"), "link", "set", self._veth(HOSTS[host].letter, "h"), "down")

    def heal(self, host: str) -> None:
        _sh("ip", "-n", self.ns("net"), "link", "set", self._veth(HOSTS[host].letter, "h"), "up")

    def pids(self, host: str) -> list[int]:
        out = _sh("ip", "netns", "pids", self.ns(host), check=False).stdout
        return [int(p) for p in out.split()]

    def freeze(self, host: str) -> list[int]:
        """Stop every process of the host, as a closed lid does; return them."""
        frozen = self.pids(host)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return frozen

    def thaw(self, host: str) -> None:
        for pid in self.pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    # -- processes
    def start(self, host: str, args: list[str], env: dict, log_name: str, user: str | None = None):
        """Start args inside host, logging to workdir/log_name; stopped by down()."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        log = open(self.workdir / log_name, "ab")
        proc = subprocess.Popen(
            self.wrap(host)(prefix + args), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.workdir,
        )  # fmt: skip
        self.procs.append((proc, log))
        return proc

    def start_server(self, env: dict) -> subprocess.Popen:
        """`prefect server start` on the aws host; its database on the data node, as in
        production (DESIGN.md), once start_data_node() has run, else SQLite under workdir."""
        home = self.workdir / "server-home"
        home.mkdir(exist_ok=True)
        from deployments.local_stack import SERVER_SETTINGS  # as make up and production run it

        env = {
            **env,
            **SERVER_SETTINGS,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.api_url.removesuffix("/api"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://postgres@{self.addr('osaka')}:5432/prefect"
                if self.pg_data
                else f"sqlite+aiosqlite:///{home}/prefect.db"
            ),
        }
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", self.addr("aws"),
                "--port", str(SERVER_PORT)]  # fmt: skip
        self.server = self.start("aws", args, env, "server.log")
        self.server_env = env
        return self.server

    def restart_server(self, env: dict | None = None, timeout: float = 180) -> None:
        """Stop the server as systemd does (SIGTERM) and start it again on the same database."""
        from tests.deployments import stack

        stack.stop(self.server, timeout=30)
        self.start_server(env or self.server_env)
        stack.wait_healthy(self.api_url, self.server, timeout=timeout)

    def start_data_node(self) -> tuple[str, str]:
        """Its own PostgreSQL cluster and redis-server on the osaka host; their URLs."""
        data = self.workdir / "pg"
        data.mkdir()
        shutil.chown(data, "postgres")
        self.workdir.chmod(0o755)
        _sh("runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U",
            "postgres", "--auth=trust", "-E", "UTF8")  # fmt: skip
        self.pg_data = data
        with open(data / "pg_hba.conf", "a") as hba:  # the hosts reach it across the links
            hba.write(f"host all all 10.{self.net}.0.0/16 trust\n")
        host = self.addr("osaka")
        options = f"-c listen_addresses={host} -c port=5432 -c unix_socket_directories={data}"
        pg_ctl = ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data)]
        _sh(
            *self.wrap("osaka")(
                pg_ctl + ["-l", str(data / "server.log"), "-o", options, "-w", "start"]
            )
        )
        for database in ("market", "prefect"):  # the store, and the server's own database
            _sh(
                *self.wrap("osaka")(
                    [str(PG_BIN / "createdb"), "-h", host, "-U", "postgres", database]
                )
            )
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir()
        redis = ["redis-server", "--bind", host, "--port", "6379", "--dir", str(redis_dir)]
        # Never saved, as on a fresh node; reached from the other hosts, so not loopback-only.
        redis += ["--save", "", "--protected-mode", "no"]
        self.start("osaka", redis, os.environ.copy(), "redis.log")
        return f"postgresql://postgres@{host}:5432/market", f"redis://{host}:6379/0"

    def down(self) -> None:
        """Stop everything this topology started and remove its namespaces and links."""
        for host in HOSTS:
            self.thaw(host)  # a frozen process cannot act on SIGTERM
        for proc, log in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
        if self.pg_data is not None:
            _sh("runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                str(self.pg_data), "-m", "immediate", "stop", check=False)  # fmt: skip
        remove(self.run)
        _MADE.discard(self.run)

    def __enter__(self) -> Topology:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()


def remove(run: str) -> None:
    """Kill what still runs in a run's namespaces, then delete them and its links."""
    names = _sh("ip", "netns", "list", check=False).stdout.split()
    for ns in [n for n in names if n.startswith(f"{PREFIX}{run}-")]:
        pids = _sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in map(int, pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while _sh("ip", "netns", "pids", ns, check=False).stdout.strip() and time.time() < deadline:
            time.sleep(0.2)
        _sh("ip", "netns", "del", ns, check=False)
    # Deleting a namespace deletes the veths in it, and with them their peers out here.
    _sh("ip", "link", "del", f"{PREFIX}{run}xn", check=False)


def sweep() -> list[str]:
    """Remove whatever the runs of this process left behind (an interrupted session)."""
    left = sorted(_MADE)
    for run in left:
        remove(run)
    _MADE.clear()
    return left
