"""The deployed shape on one machine: pools of their real types, runs inside the built images.

A Prefect server of this module's own gets what production gets: `python -m
deployments.bootstrap all` (the fargate pool as ECS, gpu-desktop as docker, blocks, limits,
automations) and `prefect deploy --all`. The real ECS worker serves fargate: it registers the
task definition and calls RunTask on moto, and tests/fakes/fargate.py runs each task as
Fargate would, in the image at the task's CPU and memory on the host network, and sends ECS's
stop event to the queue the worker's observer reads. The real docker worker (prefect-docker)
serves gpu-desktop with the model image. Yahoo, FRED, S3 (the model bucket) and the webhook
are stand-ins on loopback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import create_database, drop_database, free_port
from tests.deployments import stack
from tests.fakes.aws import EXECUTION_ROLE_ARN, REGION, FakeAws
from tests.fakes.fargate import EVENTS_QUEUE, FakeFargate
from tests.fakes.fred import FakeFred
from tests.fakes.webhook import FakeWebhook
from tests.fakes.yahoo import FakeYahoo

# The first test to use the images fixture builds every image: about 8 minutes on a machine
# without the layers cached, more than the suite's 600 s per test.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "JPM", "XOM"]
START = "2023-06-01"
FRI = "2024-06-14T22:00:00+00:00"  # after Friday's NYSE close
TUE = "2024-06-18T22:00:00+00:00"  # the next Tuesday evening: a daily run
FRED_KEY = "abcdef0123456789abcdef0123456789"
BUCKET = "investflow-models-test"
# Columns the database fills with the time of the write: they differ between any two runs.
WRITE_TIMES = {"ingested_at", "updated_at", "flagged_at", "rebased_at", "written_at", "first_seen"}


@contextlib.contextmanager
def prefect_server(home, env):
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0]],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        stack.wait_healthy(env["PREFECT_API_URL"], proc, timeout=180)
        yield proc
    finally:
        stack.stop(proc)
        log.close()


@pytest.fixture(scope="module")
def shape(images, pg_admin_url, tmp_path_factory):
    """The production-shaped system, built once for the module."""
    from tasks.store.engine import get_engine

    home = tmp_path_factory.mktemp("shape")
    port = free_port()
    store_url = create_database(pg_admin_url)
    with contextlib.ExitStack() as exits:
        exits.callback(drop_database, store_url)
        aws = exits.enter_context(FakeAws())
        yahoo = exits.enter_context(FakeYahoo())
        fred = exits.enter_context(FakeFred(FRED_KEY))
        fred.add_series("DGS10", {dt.date(2024, 5, 1) + dt.timedelta(days=i): 4.0 + i / 100
                                  for i in range(30)},
                        frequency="Daily", frequency_short="D", units="Percent")  # fmt: skip
        webhook = exits.enter_context(FakeWebhook())
        cluster = f"investflow-shape-{uuid.uuid4().hex[:6]}"
        aws.create_fargate_cluster(cluster)
        vpc_id, subnet_id, group_id = aws.create_network()
        aws.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        env = stack.stack_env(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
            PREFECT_UI_URL=f"http://127.0.0.1:{port}",
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
            **aws.env(),
            # The settings an operator puts in .env for `bootstrap all` (README: Pointing it
            # at the real clouds), the stand-ins' addresses in place of the internet's.
            INVESTFLOW_DATABASE_URL=store_url,
            INVESTFLOW_FRED_API_KEY=FRED_KEY,
            INVESTFLOW_ALERT_WEBHOOK_URL=f"{webhook.url}/hook",
            INVESTFLOW_S3_ENDPOINT_URL=aws.url,
            INVESTFLOW_S3_BUCKET=BUCKET,
            INVESTFLOW_AWS_ACCESS_KEY_ID=aws.env()["AWS_ACCESS_KEY_ID"],
            INVESTFLOW_AWS_SECRET_ACCESS_KEY=aws.env()["AWS_SECRET_ACCESS_KEY"],
            INVESTFLOW_AWS_REGION=REGION,
            INVESTFLOW_ECS_CLUSTER=cluster,
            INVESTFLOW_ECS_VPC_ID=vpc_id,
            INVESTFLOW_ECS_SUBNETS=f'["{subnet_id}"]',
            INVESTFLOW_ECS_SECURITY_GROUPS=f'["{group_id}"]',
            INVESTFLOW_ECS_EXECUTION_ROLE_ARN=EXECUTION_ROLE_ARN,
            INVESTFLOW_INGESTION_IMAGE=images["ingestion"],
            INVESTFLOW_CPU_IMAGE=images["cpu"],
            INVESTFLOW_GPU_IMAGE=images["gpu"],
            # The ECS worker's observer reads the queue `prefect-aws ecs-worker deploy-events`
            # makes; a rejected RunTask fails at once rather than after a minute of retries.
            PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME=EVENTS_QUEUE,
            PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_REGION=REGION,
            PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS="1",
        )
        env.pop("PREFECT_API_AUTH_STRING", None)
        # `prefect deploy` fills prefect.yaml's {{ $INVESTFLOW_CODE_DIR }} from its own
        # environment when set; unset, each run reads it where it runs (/opt/investflow).
        env.pop("INVESTFLOW_CODE_DIR")
        exits.enter_context(prefect_server(home, env))
        stack.run([str(stack.BIN / "python"), "-m", "deployments.bootstrap", "all"], env)
        stack.run([str(stack.BIN / "prefect"), "--no-prompt", "deploy", "--all"], env,
                  timeout=600)  # fmt: skip
        fargate = exits.enter_context(FakeFargate(aws, cluster, mounts=[str(yahoo.ca_file)]))
        exits.enter_context(stack.worker("fargate", env, home, kind="ecs"))
        exits.enter_context(stack.worker("gpu-desktop", env, home, kind="docker"))
        try:
            yield {
                "env": env, "store_url": store_url, "yahoo": yahoo, "fred": fred,
                "webhook": webhook, "fargate": fargate, "aws": aws, "home": home,
                "engine": get_engine(store_url),
            }  # fmt: skip
        except BaseException:
            for log in sorted(home.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-4000:]}")
            for task in fargate.tasks:
                print(f"--- task {task.arn} exit {task.exit_code}\n{task.logs[-3000:]}")
            raise
        finally:
            subprocess.run(  # what the docker worker made and could not start
                "docker ps -aq --filter label=io.prefect.flow-run-id | xargs -r docker rm -f",
                shell=True,
                capture_output=True,
            )


@contextlib.contextmanager
def on_server(shape):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: shape["env"]["PREFECT_API_URL"]}):
        yield


def run_deployment(shape, name: str, parameters: dict, job_variables: dict | None = None):
    from prefect.client.orchestration import get_client

    with on_server(shape), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        return client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, job_variables=job_variables or {}
        ).id


def final(shape, run_id, timeout: float = 300, settle: float = 0):
    with on_server(shape):
        return stack.wait_for_final_state(run_id, timeout=timeout, settle=settle)


def stand_in_env(shape) -> dict[str, str]:
    """The fargate pool's env job variable, plus where the stand-ins are.

    It replaces the pool's env, heartbeat setting included, as an operator's own env does: the
    image keeps runs sending heartbeats (tests/deployments/test_run_env.py). Without that, the
    Spot test's second task, silent, was crashed 90 s into its run and resubmitted again.
    """
    return {"env": {"INVESTFLOW_CODE_DIR": "/opt/investflow", **shape["yahoo"].env(),
                    "INVESTFLOW_FRED_BASE_URL": shape["fred"].url}}  # fmt: skip


def table(engine, name: str) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {name}"), conn)
    frame = frame.drop(columns=[c for c in frame.columns if c in WRITE_TIMES or c == "id"])
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_us_prices_inside_the_ingestion_image_at_a_quarter_cpu_equals_a_process_run(
    shape, pg_admin_url, monkeypatch
):
    from flows.prices import ingest_us_prices
    from tasks.limits import set_limit
    from tasks.store.engine import get_engine, migrate

    runs = {}
    for step, params in (
        ("backfill", {"symbols": SYMBOLS, "start": START, "as_of": FRI}),
        ("daily", {"symbols": SYMBOLS, "as_of": TUE}),
    ):
        run_id = run_deployment(shape, "us-prices/us-prices", params, stand_in_env(shape))
        flow_run = final(shape, run_id)
        task = shape["fargate"].task_for(run_id)
        assert flow_run.state.is_completed(), (flow_run.state.message, task.logs[-3000:])
        # Fargate's 256 CPU units and 512 MB, from the pool's template, in the ingestion image.
        assert (task.cpu, task.memory_mb, task.image) == (256, 512, "investflow-ingestion:test")
        assert task.command == ["prefect", "flow-run", "execute"]
        # Within the cap, not killed for it. (The cgroup's peak is no job peak: it counts the
        # page cache of the image's files, charged to whichever container reads them first.)
        assert task.exit_code == 0 and not task.oom_killed
        runs[step] = task

    # The same two runs as a process worker runs them, into a store of their own.
    process_url = create_database(pg_admin_url)
    try:
        migrate(process_url)
        set_limit("yahoo", 1, 200.0)
        monkeypatch.setenv("INVESTFLOW_DATABASE_URL", process_url)
        for name, value in shape["yahoo"].env().items():
            monkeypatch.setenv(name, value)
        ingest_us_prices(symbols=SYMBOLS, start=START, as_of=FRI)
        ingest_us_prices(symbols=SYMBOLS, as_of=TUE)
        for name in ("daily_prices", "corporate_actions", "instruments", "quality_flags"):
            in_image, in_process = (
                table(shape["engine"], name),
                table(get_engine(process_url), name),
            )
            pd.testing.assert_frame_equal(in_image, in_process, check_dtype=False, obj=name)
        assert len(table(shape["engine"], "daily_prices")) > len(SYMBOLS) * 250
    finally:
        drop_database(process_url)


def test_macro_inside_the_ingestion_image(shape):
    run_id = run_deployment(shape, "macro/macro", {"series": ["DGS10"]}, stand_in_env(shape))
    flow_run = final(shape, run_id)
    task = shape["fargate"].task_for(run_id)
    assert flow_run.state.is_completed(), (flow_run.state.message, task.logs[-3000:])
    assert (task.cpu, task.memory_mb) == (256, 512)
    with shape["engine"].connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(*) FROM macro_observations WHERE series_id = 'DGS10'")
        ).scalar()
    assert stored == 30


def test_a_task_over_its_memory_is_killed_and_the_operator_hears_why(shape):
    """Past the task's memory the kernel kills the flow's process, as Fargate's cgroup does: the
    run ends Crashed saying so (SIGKILL, memory), and the crash alert posts it. (A task whose
    main process dies instead is marked Crashed by the ECS worker's observer from the stop
    event; either way a run that had started is resubmitted first, see alert_rules.py.)"""
    webhook = shape["webhook"]
    variables = {**stand_in_env(shape), "memory": 160}
    run_id = run_deployment(shape, "us-prices/us-prices", {"symbols": SYMBOLS, "start": START,
                                                           "as_of": FRI}, variables)  # fmt: skip
    with on_server(shape):
        from prefect.client.orchestration import get_client

        def crashed_for_good():
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(run_id)
            if flow_run.state.is_crashed() and webhook.matching(flow_run.name):
                return flow_run

        flow_run = stack.wait_until(crashed_for_good, timeout=420, what="the crash alert")
    last = shape["fargate"].task_for(run_id)
    tasks = [t for t in shape["fargate"].tasks if t.flow_run_id == str(run_id)]
    assert last.oom_killed and all(t.oom_killed for t in tasks), [t.logs[-2000:] for t in tasks]
    (alert,) = webhook.matching(flow_run.name)
    assert "Crashed" in alert and "us-prices" in alert, alert
    print(f"{len(tasks)} task(s), final state: {flow_run.state.message}\nalert: {alert}")


def test_a_spot_interruption_is_resubmitted_and_completes_without_an_alert(shape):
    """Spot reclaims the task mid-run: ECS's stop event reaches the ECS worker's observer, which
    marks the run Crashed; the resubmit rule schedules it again and the next task completes."""
    from prefect.client.orchestration import get_client

    webhook = shape["webhook"]
    # A backfill of symbols not stored yet, so the run is still busy when Spot takes the task.
    params = {"symbols": ["IBM", "ORCL", "CSCO"], "start": "2016-01-04", "as_of": TUE}
    run_id = run_deployment(shape, "us-prices/us-prices", params, stand_in_env(shape))

    def running():
        with on_server(shape), get_client(sync_client=True) as client:
            return client.read_flow_run(run_id).state.is_running()

    stack.wait_until(running, timeout=180, what="the run to start in its task")
    interrupted = shape["fargate"].interrupt(run_id)
    # Crashed is final until the resubmit rule acts: only a state that stays counts.
    flow_run = final(shape, run_id, timeout=300, settle=20)
    with on_server(shape), get_client(sync_client=True) as client:
        states = [s.name for s in client.read_flow_run_states(run_id)]
    tasks = [t for t in shape["fargate"].tasks if t.flow_run_id == str(run_id)]
    assert flow_run.state.is_completed(), "\n".join(
        [flow_run.state.message, " -> ".join(states)]
        + [f"task {t.arn}: exit {t.exit_code}\n{t.env}\n{t.logs[-2500:]}" for t in tasks]
    )
    assert "Crashed" in states and "Resubmitted" in states, states
    second = shape["fargate"].task_for(run_id)
    tasks = [t for t in shape["fargate"].tasks if t.flow_run_id == str(run_id)]
    assert tasks == [interrupted, second] and second.exit_code == 0
    # Resubmitted, so not alerted: the crash alert is for a run that will not be tried again.
    assert webhook.matching(flow_run.name) == []


def write_training_prices(engine) -> None:
    """Prices with a learnable pattern, alone in the store, so the model is promoted."""
    from tasks.store.upsert import upsert_frame
    from tests.tasks.models.test_features import synthetic_prices

    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM daily_prices"))
    result = upsert_frame(
        engine, "daily_prices", synthetic_prices(symbols=6, sessions=260, phi=-0.5)
    )
    assert not result.rejected


def test_the_docker_route_trains_and_a_gpu_request_that_fails_falls_back_to_fargate(shape):
    webhook = shape["webhook"]
    write_training_prices(shape["engine"])
    # On a machine without NVIDIA's runtime an operator drops the GPU request for a run.
    trained = run_deployment(
        shape, "train-model/train-model",
        {"market": "US", "epochs": 4, "hidden": 16, "batch_size": 256, "val_sessions": 40},
        {"container_create_kwargs": {}},
    )  # fmt: skip
    flow_run = final(shape, trained, timeout=420)
    assert flow_run.state.is_completed(), flow_run.state.message
    with shape["engine"].connect() as conn:
        version = conn.execute(
            sa.text("SELECT version, uri FROM model_versions WHERE promoted")
        ).one()
    assert version.uri.startswith(f"s3://{BUCKET}/")  # Fargate reads it from there

    # As deployed: the pool asks docker for every GPU, and this machine has none.
    desktop = run_deployment(shape, "predict-returns/predict-returns", {"market": "US"})
    desktop_run = final(shape, desktop, timeout=120)
    assert desktop_run.state.is_crashed()
    assert 'could not select device driver "nvidia"' in desktop_run.state.message

    # prefect.yaml's trigger runs the same prediction on Fargate's CPU, in the CPU image.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    def fallback_run():
        with on_server(shape), get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["predict-returns-cpu"])
                )
            )
        # us-prices runs chain predictions too (prefect.yaml): find the one for this run.
        return next((r for r in found if r.parameters.get("replaces") == str(desktop)), None)

    fallback = stack.wait_until(fallback_run, timeout=120, what="the CPU fallback run")
    fallback = final(shape, fallback.id, timeout=420)
    task = shape["fargate"].task_for(fallback.id)
    assert fallback.state.is_completed(), (fallback.state.message, task.logs[-3000:])
    assert (task.cpu, task.memory_mb, task.image) == (1024, 2048, "investflow-cpu:test")
    with shape["engine"].connect() as conn:
        predicted = conn.execute(
            sa.text("SELECT count(*) FROM predictions WHERE model_version = :v"),
            {"v": version.version},
        ).scalar()
    assert predicted == 6, task.logs[-4000:]

    # The operator hears once that the desktop run crashed, and why.
    alerts = stack.wait_until(lambda: webhook.matching(desktop_run.name), timeout=60,
                              what="the desktop crash alert")  # fmt: skip
    assert len(alerts) == 1 and "could not select device driver" in alerts[0]
