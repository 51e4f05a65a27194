"""`make up` and `make down`: the whole system on this machine.

    python -m deployments.local_stack up | down

up: a Prefect server on its embedded SQLite under ./.prefect (port INVESTFLOW_PREFECT_PORT,
default 4200), blocks from the current settings, the market store migrated, rate limits and
every pool (as local process pools), the deployments of prefect.yaml that are new or changed,
and one process worker per pool. It prints one line per step; details go to
.prefect/logs/up.log. Running it again starts only what is missing, and restarts a worker
whose settings changed. down: stops the workers with every process they started, marks the
runs it interrupted Crashed, then stops the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import traceback
import urllib.request

from deployments import processes as procs
from tasks import clock

BIN = os.path.dirname(sys.executable)
# Started runs that a stop leaves without a process: down marks them so none waits forever.
INTERRUPTED = ["RUNNING", "PENDING", "CANCELLING"]
# What the Prefect server runs with here and in production (deployments/server's env file).
SERVER_SETTINGS = {"PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "deployments.event_ordering"}


class StepFailed(Exception):
    """A step failed; the message says what and what to do."""


def local_api_url() -> str:
    from tasks.settings import get_settings

    return f"http://127.0.0.1:{get_settings().prefect_port}/api"


def stack_env() -> dict[str, str]:
    """The environment of the server, the workers and this process's own Prefect client."""
    api = local_api_url()
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(procs.STATE),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Flow runs change into this folder before importing their entrypoint (prefect.yaml).
        INVESTFLOW_CODE_DIR=str(procs.ROOT),
    )
    env.setdefault("PREFECT_UI_URL", api.removesuffix("/api"))
    env.setdefault("INVESTFLOW_UI_URL", env["PREFECT_UI_URL"])
    # The server's automations do not wait 15 minutes for events processed before a restart
    # (deployments/event_ordering.py).
    env.update(SERVER_SETTINGS)
    # Every run's heartbeat and API retries (deployments/pools.py), from the worker too: a run
    # whose `env` job variable is set replaces the pool's env, and keeps these.
    from deployments.pools import RUN_ENV

    for key, value in RUN_ENV.items():
        env.setdefault(key, value)
    # Workers ask for new runs every 5 s (Prefect: 10 s), so triggered runs start fast.
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
    return env


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def check_api_url() -> None:
    exported = os.environ.get("PREFECT_API_URL")
    local = local_api_url()
    if exported and exported.rstrip("/").replace("localhost", "127.0.0.1") != local:
        raise StepFailed(
            f"PREFECT_API_URL is exported as {exported}, but make up runs its own server at "
            f"{local}. Unset it (`unset PREFECT_API_URL`), or set INVESTFLOW_PREFECT_PORT to "
            "the port it names."
        )


def step_server(env) -> str:
    api = env["PREFECT_API_URL"]
    pid = procs.recorded_pid("server")
    if pid:
        if not healthy(api):
            raise StepFailed(f"the server (pid {pid}) does not answer at {api}: run `make down`")
        return f"running (pid {pid}) at {api}"
    if healthy(api):
        raise StepFailed(
            f"something that make up did not start already answers at {api}: stop it, or set "
            "INVESTFLOW_PREFECT_PORT to a free port"
        )
    pid = procs.start(
        "server",
        [
            f"{BIN}/prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            api.rsplit(":", 1)[1].split("/")[0],
        ],
        env,
    )
    deadline = time.monotonic() + 120
    while not healthy(api):
        if not procs.alive(pid) or time.monotonic() > deadline:
            tail = (procs.LOGS / "server.log").read_text(errors="replace").splitlines()[-5:]
            raise StepFailed("the Prefect server did not start:\n      " + "\n      ".join(tail))
        time.sleep(0.5)
    return f"started (pid {pid}) at {api}"


def step_workers(env, pools) -> str:
    from deployments.pools import worker_command

    started, restarted, running = [], [], []
    for pool in pools:
        name = f"worker-{pool}"
        pid = procs.recorded_pid(name)
        if pid and procs.started_with(name) == procs.fingerprint(env):
            running.append(pool)
            continue
        if pid:  # its settings changed since it started: it would keep the old ones
            procs.terminate(procs.family({pid}), grace_s=5)
            restarted.append(pool)
        else:
            started.append(pool)
        procs.start(name, worker_command(f"{BIN}/prefect", pool, f"local-{pool}"), env)
    parts = [f"{len(pools)} pools served"]
    if started:
        parts.append(f"started {', '.join(started)}")
    if restarted:
        parts.append(f"restarted (settings changed) {', '.join(restarted)}")
    if running:
        parts.append(f"{len(running)} already running")
    return "; ".join(parts)


# How long `make up` waits for the first polls' writes to land before it returns.
SETTLE_S = 180


def step_settle(env, pools) -> str:
    """Return once every pool and deployment is READY: the burst of writes after a start is over.

    The embedded server keeps everything in one SQLite file, and SQLite has one writer at a
    time. Right after the workers start, each one's first poll flips its pool, queues and
    deployments to READY (Prefect 3.8 rewrites every deployment of the pool on each poll, in
    a BEGIN IMMEDIATE transaction), heartbeats, and each flip is an event the triggers service
    evaluates against every automation, on top of the runs the scheduler is inserting for
    the deployments just made. A loaded machine stretches each of those transactions, and
    SQLite's busy handler is a sleep-and-retry, not a queue: a writer can lose the race
    until Prefect's 60 s busy_timeout runs out (`database is locked`, a 60 s
    mark_deployments_ready), and a `prefect deployment run` issued then waits in the same
    line. Returning only after the flips have landed means the operator's first command
    meets a server that has done its start-up writing.
    """
    api = env["PREFECT_API_URL"]
    began = time.monotonic()
    waiting: list[str] = []
    while time.monotonic() - began < SETTLE_S:
        try:
            found = post(api, "/work_pools/filter", {"work_pools": {"name": {"any_": pools}}})
            waiting = [f"pool {p['name']}" for p in found if p.get("status") != "READY"]
            waiting += [f"pool {p}" for p in set(pools) - {p["name"] for p in found}]
            deployments = post(api, "/deployments/filter", {"limit": 200})
            waiting += [
                f"deployment {d['name']}"
                for d in deployments
                if d.get("work_pool_name") in pools and d.get("status") != "READY"
            ]
        except OSError as exc:  # a server busy writing may answer slowly: ask again
            waiting = [f"the server ({exc})"]
        if not waiting:
            return f"every pool and deployment ready ({time.monotonic() - began:.0f} s)"
        time.sleep(1)
    return (
        f"warning: still not ready after {SETTLE_S} s: {', '.join(waiting[:5])}; the server "
        "may answer slowly for a while (see .prefect/logs/server.log)"
    )


def up() -> None:
    procs.LOGS.mkdir(parents=True, exist_ok=True)
    check_api_url()
    env = stack_env()
    os.environ.update(env)  # what the steps' subprocesses (the prefect CLI, workers) inherit
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # This process's own client (blocks, limits, pools, automations, the readiness wait) must
    # talk to the stack's server too. Prefect read its settings when stack_env's imports loaded
    # it, before the URL above was set: without this the client went to the server the user's
    # Prefect profile names, or, with none, started a server of its own on the stack's database.
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        bootstrap(env)
    ui = env["PREFECT_UI_URL"]
    print(f"""
investflow is up.
  UI:       {ui}
  API:      {env["PREFECT_API_URL"]}   (export PREFECT_API_URL={env["PREFECT_API_URL"]})
  Run one:  .venv/bin/prefect deployment run 'us-prices/us-prices' --param 'symbols=["AAPL"]'
  Status:   make status        Stop all: make down        Logs: .prefect/logs/""")


def bootstrap(env: dict[str, str]) -> None:
    """make up's steps in order, a line each; a failed one stops the server it had started."""
    server_was_running = procs.recorded_pid("server") is not None
    log = open(procs.LOGS / "up.log", "a")
    log.write(f"\n===== make up {clock.shown(clock.now())} =====\n")
    try:
        run_step("Prefect server", log, step_server, env)
        from deployments.bootstrap import STEPS, pool_names
        from deployments.redeploy import deploy

        for title, step in STEPS.values():
            run_step(title, log, step, True)
        run_step("Deployments", log, deploy, env, f"{BIN}/prefect")
        run_step("Workers", log, step_workers, env, pool_names())
        run_step("Ready", log, step_settle, env, pool_names())
    except StepFailed:
        if not server_was_running and procs.recorded_pid("server"):
            stop(["server"], say=lambda line: log.write(line + "\n"))
            print("  (stopped the server this make up had started)")
        sys.exit(1)
    finally:
        log.close()


def run_step(title: str, log, fn, *args):
    """One line for the step; its output and any traceback go to the log only."""
    print(f"{title:<28}", end="", flush=True)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - reported in a line, traceback to the log
        log.write(out.getvalue())
        log.write(traceback.format_exc())
        message = str(exc) if isinstance(exc, StepFailed | SystemExit) else f"{exc}"
        print(f"FAILED\n  {message or type(exc).__name__}")
        print("  Details: .prefect/logs/up.log; fix the cause and run `make up` again.")
        raise StepFailed(message) from None
    log.write(out.getvalue())
    lines = result if isinstance(result, list) else [result] if result else []
    notable = [line.strip() for line in out.getvalue().splitlines() if is_notable(line)]
    print(lines[-1] if lines else "ok")
    for line in lines[:-1] + notable:
        print(f"  - {line}")
    return result


def is_notable(line: str) -> bool:
    """Bootstrap lines that say something changed or needs the operator's eye."""
    return any(word in line for word in ("created", "updated", "kept", "warning", "WARNING"))


def mark_interrupted(api: str, say) -> None:
    """Runs left started by the processes just stopped: Crashed (or Cancelled), not waiting."""
    body = {"flow_runs": {"state": {"type": {"any_": INTERRUPTED}}}}
    retrying = {"flow_runs": {"state": {"name": {"any_": ["AwaitingRetry"]}}}}
    runs = post(api, "/flow_runs/filter", body) + post(api, "/flow_runs/filter", retrying)
    for run in runs:
        cancelling = run["state"]["type"] == "CANCELLING"
        state = {
            "type": "CANCELLED" if cancelling else "CRASHED",
            "name": "Cancelled" if cancelling else "Crashed",
            "message": "Stopped by `make down` while it ran or waited for a retry.",
        }
        post(api, f"/flow_runs/{run['id']}/set_state", {"state": state, "force": True})
        say(f"  marked {run['name']} ({run['state']['name']}) {state['name']}")


def post(api: str, path: str, body: dict):
    request = urllib.request.Request(
        api + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read() or "null")


def stop(names: list[str], say=print) -> None:
    """Stop these processes and everything they started, all at once.

    A Prefect worker answers SIGTERM by finishing its runs gracefully, which takes longer than
    the grace here, so stopping five workers one by one cost five graces: one signal to all
    and one shared grace keeps `make down` to a few seconds.
    """
    families: dict[str, tuple[int, set[int]]] = {}
    for name in names:
        pid = procs.recorded_pid(name)
        if pid is None:
            procs.forget(name)
            continue
        families[name] = (pid, procs.family({pid}))
    everyone = set().union(*(family for _, family in families.values()))
    killed = procs.terminate(everyone, grace_s=4) if everyone else set()
    for name, (pid, family) in families.items():
        extra = f" and {len(family) - 1} processes it started" if len(family) > 1 else ""
        forced = killed & family
        forced_said = f" ({len(forced)} needed SIGKILL)" if forced else ""
        say(f"stopped {name} (pid {pid}){extra}{forced_said}")
        procs.forget(name)


def down() -> None:
    names = procs.recorded_names()
    if not names:
        print("nothing to stop")
        return
    api = local_api_url()
    workers = [n for n in names if n != "server"]
    stop(workers)
    if "server" in names and healthy(api):
        try:
            mark_interrupted(api, print)
        except OSError as exc:
            print(f"  could not mark interrupted runs: {exc}")
    stop([n for n in names if n == "server"])


def main(argv: list[str] | None = None) -> None:
    command = (argv or sys.argv[1:] or ["up"])[0]
    try:
        {"up": up, "down": down}[command]()
    except StepFailed as exc:
        print(f"make {command} failed: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
