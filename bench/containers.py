"""Bench: the images as Fargate runs them: size, build time, start-up, each job inside its cap
beside the same job as a plain process, and what each Fargate route costs a month.

Run: .venv/bin/python bench/containers.py [--symbols 500] [--predict-symbols 5000] [--repeats 3]
     [--starts 3] [--no-build]
As root with a docker engine (tests/deployments/docker/engine.py) and PostgreSQL at
127.0.0.1:5432; about 30 minutes at full size, 8 of them building (--symbols 20
--predict-symbols 200 --repeats 1 --starts 1 --no-build: a quick look in about 8). Writes
bench/results/containers.json.

1. Images: each one (ingestion, cpu, and the gpu recipe with the CPU torch wheel, as the tests
   build it) gets a full --no-cache build through deployments/docker/build.sh (IMAGES=<one>,
   TAG=bench; pip's downloads included), its size (docker image inspect), and the time from its
   container starting (FakeFargate's Task.started, just before `docker run`) to the flow run's
   Running state on the server, at 0.25 vCPU. build.sh has no cache switch: a `docker` shim on
   PATH adds --no-cache to its `docker build`. It also tags :latest; the bench puts the tags it
   found back and removes its own images at the end (--no-build measures the tests' :test ones).
2. Jobs, through the real path: a Prefect server of the bench's own, `deployments.bootstrap`
   (blocks, limits, pools: the fargate pool as ECS) and `prefect deploy` of us-prices, macro and
   predict-returns-cpu, the real ECS worker against moto, and FakeFargate running each task in
   its image at the task's --cpus/--memory (no swap) on the host network, under a cgroup parent
   of its own. The chaining to predict-returns is not deployed, so nothing else starts. Each job
   runs inside its cap and, in the same bench run, as a plain process (what a process worker
   does: the flow run in a process of its own, whose VmHWM is the peak), alternating which goes
   first: the us-prices backfill (bench/ingest.py's symbols, dates and rate limit as good as
   off) at 0.25 vCPU / 512 MB, the daily run after it (repeats times, each on a fresh copy of
   the backfilled store), and predict-returns-cpu for 5,000 symbols at 1 vCPU / 2 GB (repeats
   times; bench/inference.py's prices, a model in the S3 stand-in as Fargate reads it).
   A container's memory is given three ways: the engine process's VmHWM (the flow run, the
   figure to set beside the process's), the container's peak resident memory, sampled every
   0.2 s so a brief spike can slip past (anonymous memory and mapped files, of the engine and
   of the `prefect flow-run execute` process that starts it), and the cgroup's own peak, which
   counts page cache too (reclaimable: the kernel drops it before it kills for memory). CPU
   seconds: the container's cgroup (cpuacct), the process's getrusage; both include the
   interpreters' start-up.
3. Cost: Fargate bills each task from the image pull's start to its stop, per second with a
   one-minute minimum; the figures here run from `docker run` to the container's exit, with the
   images already local (a real task first pulls its image: add that time). In production the
   shared yahoo limit (4 requests/s) paces the prices runs: projected by adding the waiting to
   the measured time (an upper bound; the lower, our work hidden under the waiting, is kept in
   the notes). One macro run (the FRED stand-in at its real 1.9 requests/s) gives macro's;
   kr-prices is costed as us-prices (same flow; the same universe size assumed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    BACKFILL_AS_OF,
    DAILY_AS_OF,
    RATE_PER_S,
    RATE_SLOTS,
    START,
    SYMBOLS,
    quiet_days,
    set_day,
)
from bench.memory import peak_rss_mb  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "containers.json"
IMAGES = ("ingestion", "cpu", "gpu")
BENCH_TAG = "bench"
FRED_KEY = "abcdef0123456789abcdef0123456789"
BUCKET = "investflow-models-bench"
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
URL = "INVESTFLOW_DATABASE_URL"
US = "us-prices/us-prices"
PREDICT_CPU = "predict-returns/predict-returns-cpu"
DEPLOYMENT_PARAMETERS = {"device": "cpu"}  # predict-returns-cpu's, in prefect.yaml
# What each route may use (deployments/pools.py: the fargate pool's task sizes).
BUDGETS_MB = {"us-prices backfill": 512, "us-prices daily": 512, "predict-returns-cpu": 2048,
              "macro": 512}  # fmt: skip

# Fargate, ap-northeast-2 (Seoul), Linux/x86, USD per hour. Typed in, NOT fetched (this machine
# has no internet): check them against https://aws.amazon.com/fargate/pricing/ before quoting
# the dollars. Spot's price moves; these are about 70% off on-demand.
FARGATE_VCPU_HOUR = 0.04656
FARGATE_GB_HOUR = 0.00511
FARGATE_SPOT_VCPU_HOUR = 0.01397
FARGATE_SPOT_GB_HOUR = 0.00153
MINIMUM_BILLED_S = 60
# The fargate pool's capacity provider strategy (deployments/pools.py): Spot 4 to on-demand 1.
SPOT_SHARE = 4 / 5
WEEKS_A_MONTH = 365.25 / 7 / 12
RUNS_A_MONTH = {"Tue-Sat": 5 * WEEKS_A_MONTH, "Mon-Sat": 6 * WEEKS_A_MONTH}
# The earlier plan (EventBridge starting a 10-15 minute US task) put that job at about this.
EVENTBRIDGE_PLAN_MONTH_USD = 0.41


# ------------------------------------------------------------------------------- load average


class LoadSampler:
    """The host's 1-minute load average every 10 s, per phase of the bench."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.phase = "setup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.setdefault(self.phase, []).append(round(os.getloadavg()[0], 2))
            self._stop.wait(10)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {
            phase: {
                "min": min(s),
                "median": round(statistics.median(s), 2),
                "max": max(s),
                "n": len(s),
            }  # fmt: skip
            for phase, s in self.samples.items()
        }


# ------------------------------------------------------------------------------------- images


def image_id(ref: str) -> str | None:
    from tests.deployments.docker.engine import docker

    proc = docker("image", "inspect", ref, "--format", "{{.Id}}", check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_images(tag: str, built: dict[str, dict]) -> None:
    """A full --no-cache `make images` build of each image alone: seconds and size, into built
    as each is done (so a later failure still leaves the earlier ones for removal)."""
    from tests.deployments.docker import engine

    engine.ensure_base_image()
    real = subprocess.run(["which", "docker"], capture_output=True, text=True).stdout.strip()
    shim = Path(tempfile.mkdtemp(prefix="investflow-bench-docker-"))
    (shim / "docker").write_text(
        f'#!/bin/sh\nif [ "$1" = build ]; then shift; exec {real} build --no-cache "$@"; fi\n'
        f'exec {real} "$@"\n'
    )
    (shim / "docker").chmod(0o755)
    try:
        with engine.torch_index() as index:
            for name in IMAGES:
                latest = f"investflow-{name}:latest"
                before = image_id(latest)
                env = {"TORCH_INDEX_URL": index, "GPU_TORCH_INDEX_URL": index,
                       "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
                try:
                    proc, seconds = engine.build(name, tag, env=env)
                finally:  # build.sh tags :latest too: give it back to what held it
                    if before:
                        engine.docker("tag", before, latest, check=False)
                    else:
                        engine.docker("image", "rm", latest, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"build of {name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                    )
                assert "Using cache" not in proc.stdout, f"{name}: a layer came from the cache"
                ref = f"investflow-{name}:{tag}"
                size_mb = round(engine.image_size(ref) / 1e6, 1)  # docker's MB, as `docker images`
                built[name] = {"ref": ref, "build_s": round(seconds, 1), "size_mb": size_mb}
                print(f"  built {ref} in {seconds:.0f} s", flush=True)
    finally:
        shutil.rmtree(shim, ignore_errors=True)


def remove_images(built: dict[str, dict]) -> None:
    from tests.deployments.docker.engine import docker

    for image in built.values():
        docker("image", "rm", image["ref"], check=False, timeout=300)


# ------------------------------------------------------------------------- Fargate, measured


class ContainerSampler(threading.Thread):
    """Every 0.2 s: what the cgroup holds resident, and each of its processes' VmHWM.

    Resident: anonymous memory plus mapped files (the libraries both processes share, once),
    the container's counterpart of a process's RSS; the page cache is left out.
    """

    def __init__(self, parent: str) -> None:
        super().__init__(daemon=True)
        self.root = CGROUP_MEMORY / parent
        self.resident_peak = 0
        self.hwm: dict[int, tuple[str, int]] = {}  # pid -> (role, VmHWM bytes)
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.wait(0.2):
            with contextlib.suppress(OSError, ValueError):
                stat = dict(
                    line.split() for line in (self.root / "memory.stat").read_text().splitlines()
                )
                resident = int(stat["total_rss"]) + int(stat["total_mapped_file"])
                self.resident_peak = max(self.resident_peak, resident)
            for procs in self.root.glob("*/cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in map(int, procs.read_text().split()):
                        self._read(pid)

    def _read(self, pid: int) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
            hwm = int(status.split("VmHWM:")[1].split()[0]) * 1024
            # The supervisor becomes the engine (exec): one pid, two names; the CLI starts it.
            role = "cli" if "flow-run execute" in cmdline else "engine"
            self.hwm[pid] = (role, max(hwm, self.hwm.get(pid, ("", 0))[1]))

    def role_peak(self, role: str) -> int:
        return max((hwm for r, hwm in self.hwm.values() if r == role), default=0)


def _timestamp(docker_time: str) -> float:
    """Docker's RFC 3339 time (nanoseconds, Z) as a Unix timestamp."""
    head, _, fraction = docker_time.rstrip("Z").partition(".")
    stamp = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp()
    return stamp + float(f"0.{fraction or 0}")


def measured_fargate():
    """FakeFargate whose _run also keeps the container's stop time and its processes' peaks.

    A copy of tests/fakes/fargate.py's _run with those measurements added: the stop time is
    taken when `docker wait` returns, before the logs are read.
    """
    from tests.fakes.fargate import FakeFargate, _remove_cgroup

    class MeasuredFargate(FakeFargate):
        def _run(self, task) -> None:
            parent = f"investflow-bench-{uuid.uuid4().hex[:12]}"
            args = ["docker", "run", "--detach", "--network", "host"]
            args += [f"--cpus={task.cpu / 1024:g}", f"--memory={task.memory_mb}m"]
            args += [f"--memory-swap={task.memory_mb}m", f"--cgroup-parent=/{parent}"]
            for path in self.mounts:
                args += ["--volume", f"{path}:{path}:ro"]
            for key, value in task.env.items():
                args += ["--env", f"{key}={value}"]
            task.started = time.time()
            proc = subprocess.run(
                [*args, task.image, *task.command], capture_output=True, text=True
            )
            if proc.returncode != 0:
                task.logs, task.exit_code = proc.stderr, proc.returncode
                self._stopped(task, f"CannotStartContainerError: {proc.stderr.strip()[-300:]}")
                return
            task.container = proc.stdout.strip()
            sampler = ContainerSampler(parent)
            sampler.start()
            subprocess.run(["docker", "wait", task.container], capture_output=True)
            task.stopped_at = time.time()
            sampler.finished.set()
            sampler.join()
            state = json.loads(
                subprocess.run(["docker", "inspect", task.container], capture_output=True).stdout
            )[0]["State"]
            task.exit_code = state["ExitCode"]
            task.oom_killed = bool(state.get("OOMKilled"))
            task.logs = subprocess.run(
                ["docker", "logs", task.container],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ).stdout  # fmt: skip
            usage = CGROUP_MEMORY / parent / "memory.max_usage_in_bytes"
            if usage.exists():
                task.peak_memory_bytes = int(usage.read_text())
            task.resident_peak_bytes = sampler.resident_peak
            task.docker_started = _timestamp(state["StartedAt"])
            cpuacct = CGROUP_MEMORY.parent / "cpuacct" / parent / "cpuacct.usage"
            task.cpu_s = int(cpuacct.read_text()) / 1e9 if cpuacct.exists() else None
            task.engine_hwm_bytes = sampler.role_peak("engine")
            task.cli_hwm_bytes = sampler.role_peak("cli")
            self._stopped(task, "Essential container in task exited")
            subprocess.run(["docker", "rm", task.container], capture_output=True)
            _remove_cgroup(parent)

    return MeasuredFargate


# -------------------------------------------------------------------------------- the stack


@contextlib.contextmanager
def prefect_server(home: Path, env: dict[str, str]):
    """`prefect server start` on the bench's own port and SQLite database, as make up runs it
    (deployments/local_stack.py SERVER_SETTINGS: writes that begin IMMEDIATE). Without them
    each chunk's rate-limit call waited 1-2 s for SQLite's write lock, which no deployed run
    waits for: a backfill took 41 s instead of 8 s, as a process and in its task alike."""
    from deployments.local_stack import SERVER_SETTINGS
    from tests.deployments import stack

    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0]],
        env=env | SERVER_SETTINGS, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        stack.wait_healthy(env["PREFECT_API_URL"], proc, timeout=180)
        yield proc
    finally:
        stack.stop(proc)
        log.close()


@contextlib.contextmanager
def ecs_worker(env: dict[str, str], home: Path):
    """The real ECS worker serving the fargate pool, as its systemd unit runs it."""
    from tests.deployments import stack

    log = open(home / "worker-fargate.log", "wb")
    proc = subprocess.Popen(
        [str(stack.BIN / "prefect"), "worker", "start", "--pool", "fargate", "--type", "ecs",
         "--name", "bench-fargate", "--install-policy", "never"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def deployed_stack(home: Path, images: dict[str, str], store_url: str):
    """Server, stand-ins, bootstrap, deploy, ECS worker and Fargate: what production has."""
    from tests.deployments import stack
    from tests.fakes.aws import EXECUTION_ROLE_ARN, REGION, FakeAws
    from tests.fakes.fargate import EVENTS_QUEUE
    from tests.fakes.fred import FakeFred
    from tests.fakes.yahoo import FakeYahoo

    with contextlib.ExitStack() as exits:
        aws = exits.enter_context(FakeAws())
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
        yahoo = exits.enter_context(FakeYahoo())
        fred = exits.enter_context(FakeFred(FRED_KEY))
        from tasks.macro.fred import DEFAULT_SERIES

        days = [dt.date.today() - dt.timedelta(days=i) for i in range(400, 0, -1)]
        for series in DEFAULT_SERIES:
            fred.add_series(series, {d: 4.0 + i / 1000 for i, d in enumerate(days)},
                            frequency="Daily", frequency_short="D", units="Percent")  # fmt: skip
        cluster = f"investflow-bench-{uuid.uuid4().hex[:6]}"
        aws.create_fargate_cluster(cluster)
        vpc_id, subnet_id, group_id = aws.create_network()
        aws.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        keys = aws.env()
        env = stack.stack_env(
            **keys,
            INVESTFLOW_DATABASE_URL=store_url,
            INVESTFLOW_FRED_API_KEY=FRED_KEY,
            INVESTFLOW_S3_ENDPOINT_URL=aws.url,
            INVESTFLOW_S3_BUCKET=BUCKET,
            INVESTFLOW_AWS_ACCESS_KEY_ID=keys["AWS_ACCESS_KEY_ID"],
            INVESTFLOW_AWS_SECRET_ACCESS_KEY=keys["AWS_SECRET_ACCESS_KEY"],
            INVESTFLOW_AWS_REGION=REGION,
            INVESTFLOW_ECS_CLUSTER=cluster,
            INVESTFLOW_ECS_VPC_ID=vpc_id,
            INVESTFLOW_ECS_SUBNETS=f'["{subnet_id}"]',
            INVESTFLOW_ECS_SECURITY_GROUPS=f'["{group_id}"]',
            INVESTFLOW_ECS_EXECUTION_ROLE_ARN=EXECUTION_ROLE_ARN,
            INVESTFLOW_INGESTION_IMAGE=images["ingestion"],
            INVESTFLOW_CPU_IMAGE=images["cpu"],
            INVESTFLOW_GPU_IMAGE=images["gpu"],
            PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME=EVENTS_QUEUE,
            PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_REGION=REGION,
            PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS="1",
        )
        env.pop("PREFECT_API_AUTH_STRING", None)
        env.pop("INVESTFLOW_CODE_DIR")  # each run reads it where it runs (/opt/investflow)
        exits.enter_context(prefect_server(home, env))
        # Not `all`: the alert and resubmit automations would act on the bench's runs.
        for step in ("blocks", "limits", "pools"):
            stack.run([str(stack.BIN / "python"), "-m", "deployments.bootstrap", step], env)
        names = [
            arg
            for name in ("us-prices", "macro", "predict-returns-cpu")
            for arg in ("--name", name)
        ]
        stack.run([str(stack.BIN / "prefect"), "--no-prompt", "deploy", *names], env, timeout=600)
        fargate = exits.enter_context(measured_fargate()(aws, cluster, mounts=[str(yahoo.ca_file)]))
        exits.enter_context(ecs_worker(env, home))
        try:
            yield {"env": env, "yahoo": yahoo, "fred": fred, "fargate": fargate}
        except BaseException:
            for log in sorted(home.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            for task in fargate.tasks:
                print(f"--- task {task.arn} exit {task.exit_code}\n{task.logs[-3000:]}")
            raise


# --------------------------------------------------------------------------------- the runs


def in_fargate(
    ctx, deployment: str, params: dict, env: dict, timeout: float = 1800, **variables
) -> dict:
    """Run a deployment through the ECS worker and FakeFargate; the task's figures."""
    from prefect.client.orchestration import get_client

    from tests.deployments import stack

    requests = len(ctx["yahoo"].requests) + len(ctx["fred"].requests)
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        run_id = client.create_flow_run_from_deployment(
            deployment_id, parameters=params,
            job_variables={"env": {"INVESTFLOW_CODE_DIR": "/opt/investflow", **env}, **variables},
        ).id  # fmt: skip
    flow_run = stack.wait_for_final_state(run_id, timeout=timeout)
    task = ctx["fargate"].task_for(run_id, timeout=120)
    if not flow_run.state.is_completed():
        raise RuntimeError(f"{deployment} ended {flow_run.state.name}: {task.logs[-3000:]}")
    mb = 1 / 2**20
    return {
        "image": task.image,
        "cpu": task.cpu,
        "memory_mb": task.memory_mb,
        "start_to_running_s": round(flow_run.start_time.timestamp() - task.started, 2),
        # of which `docker run` until docker says the container started
        "docker_start_s": round(task.docker_started - task.started, 2),
        "wall_s": round(task.stopped_at - task.started, 2),
        "flow_s": round((flow_run.end_time - flow_run.start_time).total_seconds(), 2),
        "cpu_s": round(task.cpu_s, 1),
        "engine_hwm_mb": round(task.engine_hwm_bytes * mb, 1),
        "cli_hwm_mb": round(task.cli_hwm_bytes * mb, 1),
        "resident_peak_mb": round(task.resident_peak_bytes * mb, 1),
        "cgroup_peak_mb": round((task.peak_memory_bytes or 0) * mb, 1),
        "requests": len(ctx["yahoo"].requests) + len(ctx["fred"].requests) - requests,
    }


def as_process(ctx, job: str, params: dict, env: dict) -> dict:
    """The same job as a process worker runs it: the flow in a process of its own."""
    from prefect.client.orchestration import get_client

    env = {**ctx["env"], **env, "PYTHONPATH": str(ROOT)}
    began = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "child", job, json.dumps(params)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{job} as a process failed:\n{proc.stderr[-3000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(child["flow_run_id"])
    return {
        "start_to_running_s": round(flow_run.start_time.timestamp() - began, 2),
        "wall_s": round(ended - began, 2),
        "flow_s": round((flow_run.end_time - flow_run.start_time).total_seconds(), 2),
        "cpu_s": round(child["cpu_s"], 1),
        "hwm_mb": round(child["rss_mb"], 1),
    }


def child(job: str, params: dict) -> None:
    """Run one flow in this process; print its run's id, this process's peak and CPU time."""
    if job == "us-prices":
        from flows.prices import ingest_us_prices as flow
    else:
        from flows.models import predict_returns as flow
    state = flow(**params, return_state=True)
    assert state.is_completed(), state
    usage = resource.getrusage(resource.RUSAGE_SELF)  # imports included, as in the container
    figures = {"rss_mb": peak_rss_mb(), "cpu_s": usage.ru_utime + usage.ru_stime}
    print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id), **figures}))


def prediction_store(n_symbols: int) -> str:
    """A store with n_symbols' last WINDOW + 1 sessions and a promoted US model in S3."""
    import torch

    from bench.inference import synthetic_prices
    from bench.scratch import create_store
    from tasks.models import checkpoint, model, storage
    from tasks.models.features import FEATURE_SPEC, WINDOW, Normaliser, session_features
    from tasks.store.engine import get_engine
    from tasks.store.upsert import upsert_frame

    url = create_store()
    engine = get_engine(url)
    prices = synthetic_prices(n_symbols, WINDOW + 1)
    upsert_frame(engine, "daily_prices", prices)
    feats = session_features(prices)
    normaliser = Normaliser.fit(
        feats[["log_return", "range", "volume_change"]].to_numpy(), feats["log_return"].to_numpy()
    )
    torch.manual_seed(0)
    net = model.ReturnGRU().eval()  # production shape; weights do not change the speed
    day = dt.date(2024, 1, 2)
    blob = checkpoint.checkpoint_bytes(
        net, model.ModelConfig(), normaliser, market="US", train_range=(day, day),
        val_range=(day, day), metrics={"samples": 0},
    )  # fmt: skip
    # Through the investflow-models block: the S3 stand-in, where a Fargate task reads it.
    uri = storage.open_storage(Path(tempfile.gettempdir())).put("US/us-bench.pt", blob)
    assert uri.startswith("s3://"), uri
    storage.register_version(engine, {
        "version": "us-bench", "market": "US", "feature_spec": FEATURE_SPEC, "window": WINDOW,
        "train_start": day, "train_end": day, "metrics": {"samples": 0},
        "sha256": checkpoint.sha256(blob), "uri": uri,
    })  # fmt: skip
    storage.promote(engine, "us-bench", "US")
    return url


def clear_predictions(url: str) -> None:
    import sqlalchemy as sa

    from tasks.store.engine import get_engine

    with get_engine(url).begin() as conn:
        conn.execute(sa.text("DELETE FROM predictions"))


def side_by_side(
    ctx,
    container_first: bool,
    deployment: str,
    params: dict,
    urls: dict,
    env: dict | None = None,
    before=lambda: None,
) -> tuple[dict, dict]:
    """The job in its container and as a process, in the order asked: (container, process).

    urls: each side's store; before() runs ahead of each side (e.g. emptying a table).
    """
    env = env or {}

    def container() -> dict:
        before()
        # The deployment's own parameters stand; the process is given them explicitly.
        given = {k: v for k, v in params.items() if k not in DEPLOYMENT_PARAMETERS}
        return in_fargate(ctx, deployment, given, env | {URL: urls["container"]})

    def process() -> dict:
        before()
        return as_process(ctx, deployment.split("/")[0], params, env | {URL: urls["process"]})

    if container_first:
        c = container()
        return c, process()
    p = process()
    return container(), p


def run_jobs(ctx, args, stores: dict, images: dict[str, str]) -> dict:
    """Each job in its container and as a process, alternating which goes first."""
    from bench.scratch import clone_store, drop_store
    from tasks.limits import set_limit

    yahoo = ctx["yahoo"]
    symbols = SYMBOLS[: args.symbols]
    quiet_days(yahoo)
    # The limit as good as off, as bench/ingest.py does: our code, not the polite 4/s.
    set_limit("yahoo", RATE_SLOTS, RATE_PER_S)
    jobs: dict[str, dict] = {}

    def record(job: str, pair: tuple[dict, dict]) -> None:
        sides = jobs.setdefault(job, {"container": [], "process": []})
        for side, run in zip(("container", "process"), pair):
            sides[side].append(run)
            print(f"  {side:<9} {run}", flush=True)

    print("us-prices backfill", flush=True)
    # The stand-in builds every symbol's history for the day before the runs are timed, as
    # bench/ingest.py has it do: the first run after a clock change paid for it otherwise (the
    # first daily run took 7.2 s as a process, the next ones 1.0 s).
    set_day(yahoo, BACKFILL_AS_OF)
    params = {"symbols": symbols, "start": START, "as_of": BACKFILL_AS_OF}
    urls = {"container": stores["container"], "process": stores["process"]}
    record("us-prices backfill", side_by_side(ctx, True, US, params, urls, yahoo.env()))

    print("us-prices daily", flush=True)
    set_day(yahoo, DAILY_AS_OF)
    params = {"symbols": symbols, "as_of": DAILY_AS_OF}
    for i in range(args.repeats):
        # Each on a fresh copy of the backfilled store, as bench/ingest.py's daily runs.
        copies = {side: clone_store(url) for side, url in urls.items()}
        try:
            record(
                "us-prices daily", side_by_side(ctx, i % 2 == 1, US, params, copies, yahoo.env())
            )
        finally:
            for url in copies.values():
                drop_store(url)

    print("predict-returns-cpu", flush=True)
    predict = stores["predict"]
    params = {"market": "US", **DEPLOYMENT_PARAMETERS}
    for i in range(args.repeats):
        record("predict-returns-cpu", side_by_side(
            ctx, i % 2 == 0, PREDICT_CPU, params, {"container": predict, "process": predict},
            before=lambda: clear_predictions(predict),
        ))  # fmt: skip

    # macro at its real FRED pace (1.9 requests/s), for its cost; no process side asked of it.
    print("macro", flush=True)
    env = {"INVESTFLOW_FRED_BASE_URL": ctx["fred"].url, URL: stores["container"]}
    jobs["macro"] = {"container": [in_fargate(ctx, "macro/macro", {}, env)]}
    print(f"  container {jobs['macro']['container'][0]}", flush=True)

    # Start-up of the model images at 0.25 vCPU: predict-returns for a market with no model,
    # which completes as soon as it has looked (the run after Running is not the figure). The
    # ingestion image's come from the runs above, all at 0.25 vCPU.
    ingestion = ("us-prices backfill", "us-prices daily", "macro")
    starts = {
        "ingestion": [r["start_to_running_s"] for j in ingestion for r in jobs[j]["container"]]
    }
    for name in ("cpu", "gpu"):
        print(f"start-up, {name} image", flush=True)
        starts[name] = []
        for _ in range(args.starts):
            run = in_fargate(ctx, PREDICT_CPU, {"market": "KR"}, {URL: predict},
                             cpu=256, image=images[name])  # fmt: skip
            starts[name].append(run["start_to_running_s"])
            print(f"  {run}", flush=True)
    return {"jobs": jobs, "starts": starts}


# ------------------------------------------------------------------------------------- cost


def fargate_cost(cpu_units: int, memory_mb: int, seconds: float, spot: bool) -> dict:
    """What Fargate bills one task of that size running that long."""
    billed = max(MINIMUM_BILLED_S, math.ceil(seconds))
    vcpu_s, gb_s = cpu_units / 1024 * billed, memory_mb / 1024 * billed
    vcpu_h = FARGATE_SPOT_VCPU_HOUR if spot else FARGATE_VCPU_HOUR
    gb_h = FARGATE_SPOT_GB_HOUR if spot else FARGATE_GB_HOUR
    usd = vcpu_s / 3600 * vcpu_h + gb_s / 3600 * gb_h
    return {"billed_s": billed, "vcpu_s": vcpu_s, "gb_s": gb_s, "usd": usd}


def route_cost(run: dict, seconds: float, runs_a_month: float | None, spot_share: float) -> dict:
    """One run's bill on demand, on Spot and at the route's mix; a month's at its schedule."""
    on_demand = fargate_cost(run["cpu"], run["memory_mb"], seconds, spot=False)
    spot = fargate_cost(run["cpu"], run["memory_mb"], seconds, spot=True)
    mix = spot_share * spot["usd"] + (1 - spot_share) * on_demand["usd"]
    cost = {
        "seconds": round(seconds, 1),
        "billed_s": on_demand["billed_s"],
        "vcpu_s": round(on_demand["vcpu_s"], 1),
        "gb_s": round(on_demand["gb_s"], 1),
        "usd_on_demand": round(on_demand["usd"], 6),
        "usd_spot": round(spot["usd"], 6),
        "usd_pool_mix": round(mix, 6),
    }
    if runs_a_month:
        cost["runs_a_month"] = round(runs_a_month, 2)
        for kind in ("on_demand", "spot", "pool_mix"):
            cost[f"month_{kind}"] = round(cost[f"usd_{kind}"] * runs_a_month, 4)
    return cost


def costs(jobs: dict) -> dict:
    """Each route's cost a month at its schedule (predict-returns-cpu: per fallback run)."""
    from tasks.limits import RATE_LIMITS

    def median(job: str) -> dict:
        runs = jobs[job]["container"]
        keys = ("wall_s", "requests", "cpu", "memory_mb")
        return {k: statistics.median(r[k] for r in runs) for k in keys}

    daily, backfill = median("us-prices daily"), median("us-prices backfill")
    macro, predict = median("macro"), median("predict-returns-cpu")
    # In production the shared yahoo limit (4/s) paces the requests. An upper bound: all of
    # that waiting added to our own time, though some of our work overlaps it.
    yahoo_per_s = RATE_LIMITS["yahoo"][1]
    polite = daily["requests"] / yahoo_per_s
    tue_sat, mon_sat = RUNS_A_MONTH["Tue-Sat"], RUNS_A_MONTH["Mon-Sat"]
    out = {
        "us-prices daily, as measured (limit off)": route_cost(
            daily, daily["wall_s"], tue_sat, SPOT_SHARE
        ),
        "us-prices daily, at Yahoo's 4/s": route_cost(
            daily, daily["wall_s"] + polite, tue_sat, SPOT_SHARE
        ),
        "kr-prices daily, at Yahoo's 4/s (as us-prices)": route_cost(
            daily, daily["wall_s"] + polite, tue_sat, SPOT_SHARE
        ),
        "macro (FRED's 1.9/s, measured)": route_cost(macro, macro["wall_s"], mon_sat, SPOT_SHARE),
        # prefect.yaml runs the fallback on on-demand FARGATE only.
        "predict-returns-cpu, per fallback run": route_cost(predict, predict["wall_s"], None, 0.0),
        "us-prices backfill, once, at Yahoo's 4/s": route_cost(
            backfill, backfill["wall_s"] + backfill["requests"] / yahoo_per_s, None, SPOT_SHARE
        ),
    }
    us_month = out["us-prices daily, at Yahoo's 4/s"]["month_on_demand"]
    runs = jobs["us-prices daily"]["container"]
    overlapped = statistics.median(
        r["wall_s"] - r["flow_s"] + max(r["flow_s"], polite) for r in runs
    )
    pull = fargate_cost(daily["cpu"], daily["memory_mb"], MINIMUM_BILLED_S + 10, spot=False)
    pull_usd = (
        pull["usd"] - fargate_cost(daily["cpu"], daily["memory_mb"], MINIMUM_BILLED_S, False)["usd"]
    )
    out["_notes"] = {
        "polite_wait_s": round(polite, 1),
        "us_prices_daily_at_4_per_s_if_our_work_overlaps_the_waiting_s": round(overlapped, 1),
        "us_prices_month_on_demand_per_10_s_more_a_run": round(
            pull_usd * RUNS_A_MONTH["Tue-Sat"], 4
        ),
        "daily_requests": daily["requests"],
        "eventbridge_plan_month_usd": EVENTBRIDGE_PLAN_MONTH_USD,
        # The plan's 10-15 minute task, were it this route's size, at these prices.
        "a_10_to_15_minute_task_at_this_size_month_on_demand": [
            round(fargate_cost(daily["cpu"], daily["memory_mb"], m * 60, False)["usd"] * tue_sat, 4)
            for m in (10, 15)
        ],
        "us_prices_month_on_demand_over_plan": round(us_month / EVENTBRIDGE_PLAN_MONTH_USD, 3),
        "prices_usd_per_hour": {
            "on_demand": {"vcpu": FARGATE_VCPU_HOUR, "gb": FARGATE_GB_HOUR},
            "spot": {"vcpu": FARGATE_SPOT_VCPU_HOUR, "gb": FARGATE_SPOT_GB_HOUR},
            "region": "ap-northeast-2, Linux/x86",
            "source": "typed in, not fetched: check against AWS's Fargate pricing page",
        },
        "minimum_billed_s": MINIMUM_BILLED_S,
        "pool_mix_spot_share": SPOT_SHARE,
        "excluded": "the image pull (Fargate bills from its start; the images were local here)",
    }
    return out


# ------------------------------------------------------------------------------------- main


def summarise(side_runs: list[dict]) -> dict:
    """Each time's median over the runs, each memory peak's maximum, and every run's figures."""
    summary = {}
    for key, value in side_runs[0].items():
        if not isinstance(value, (int, float)):
            continue
        values = [r[key] for r in side_runs]
        peak = key.endswith("_mb") and key != "memory_mb"  # what the budget must hold
        summary[key] = max(values) if peak else round(statistics.median(values), 2)
    return summary | {"runs": side_runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=len(SYMBOLS))
    parser.add_argument("--predict-symbols", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3, help="daily and predict runs, each side")
    parser.add_argument("--starts", type=int, default=3, help="start-up runs per model image")
    parser.add_argument("--no-build", action="store_true", help="measure the tests' :test images")
    args = parser.parse_args()

    # Prefect reads its settings when first imported: this process is a client of the bench's
    # own server, with a home of its own, before anything imports Prefect.
    from tasks.backups.redis.restore import free_port  # imports no Prefect

    home = Path(tempfile.mkdtemp(prefix="investflow-bench-containers-"))
    port = free_port()
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_UI_URL=f"http://127.0.0.1:{port}",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        XDG_CACHE_HOME=str(home / "cache"),
    )
    # A kill (nohup'd run, timeout) still cleans up: containers, cgroups, databases, server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench.scratch import create_store, drop_store

    started = dt.datetime.now(dt.UTC)
    built: dict[str, dict] = {}
    stores: dict[str, str] = {}
    with LoadSampler() as load, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, home, ignore_errors=True)
        cleanup.callback(lambda: [drop_store(u) for u in stores.values()])
        cleanup.callback(remove_images, built)
        if args.no_build:
            images = {name: f"investflow-{name}:test" for name in IMAGES}
        else:
            load.phase = "builds"
            build_images(BENCH_TAG, built)
            images = {name: b["ref"] for name, b in built.items()}
        load.phase = "setup"
        stores["container"], stores["process"] = create_store(), create_store()
        ctx = cleanup.enter_context(deployed_stack(home, images, stores["container"]))
        stores["predict"] = prediction_store(args.predict_symbols)
        load.phase = "runs"
        measured = run_jobs(ctx, args, stores, images)

    from tests.deployments.docker.engine import image_size

    jobs, starts = measured["jobs"], measured["starts"]
    images_out = {}
    for name in IMAGES:
        size = built[name]["size_mb"] if built else round(image_size(images[name]) / 1e6, 1)
        images_out[name] = {
            "size_mb": size,
            "build_s": built[name]["build_s"] if built else None,
            "start_to_running_s": statistics.median(starts[name]),
            "start_to_running_runs_s": starts[name],
        }
    result = {
        "images": images_out,
        "jobs": {
            job: {side: summarise(runs) for side, runs in s.items()} for job, s in jobs.items()
        },
        "budgets_mb": BUDGETS_MB,
        "fargate_cost": costs(jobs),
        "symbols": args.symbols,
        "predict_symbols": args.predict_symbols,
        "repeats": args.repeats,
        "images_measured": "the bench's builds (TAG=bench)" if built else "the tests' :test images",
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": started.isoformat(timespec="seconds"),
        "load_avg_1m": load.summary(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"wrote {RESULTS}")


def report(result: dict) -> None:
    """The figures as three small tables."""
    print("\nimage      size MB  build s  start->Running s at 0.25 vCPU (median; runs)")
    for name, i in result["images"].items():
        build = i["build_s"] if i["build_s"] is not None else "-"
        print(f"{name:<10} {i['size_mb']:>7}  {build:>7}  "
              f"{i['start_to_running_s']} {i['start_to_running_runs_s']}")  # fmt: skip
    print("\njob (budget MB)             side       wall s  to Running s  CPU s  peak MB")
    print("  (medians; peaks: the runs' maximum of the container's engine VmHWM / resident /")
    print("  cgroup with page cache, the process's VmHWM)")
    for job, sides in result["jobs"].items():
        for side, s in sides.items():
            if side == "container":
                peak = f"{s['engine_hwm_mb']} / {s['resident_peak_mb']} / {s['cgroup_peak_mb']}"
            else:
                peak = f"{s['hwm_mb']}"
            label = f"{job} ({result['budgets_mb'][job]})"
            print(f"{label:<27} {side:<10} {s['wall_s']:>6}  {s['start_to_running_s']:>12}  "
                  f"{s['cpu_s']:>5}  {peak}")  # fmt: skip
    print("\nroute                                          billed s  vCPU-s    GB-s  $ on-demand"
          "     $ Spot  a month: on-demand / Spot / pool $")  # fmt: skip
    for route, c in result["fargate_cost"].items():
        if route.startswith("_"):
            continue
        month = "-"
        if "runs_a_month" in c:
            month = (
                f"{c['month_on_demand']:.3f} / {c['month_spot']:.3f} / {c['month_pool_mix']:.3f}"
            )
        print(f"{route:<46} {c['billed_s']:>8} {c['vcpu_s']:>7} {c['gb_s']:>7} "
              f"{c['usd_on_demand']:>12.5f} {c['usd_spot']:>10.5f}  {month}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
