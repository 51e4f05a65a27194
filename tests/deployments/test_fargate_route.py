"""The fargate route: the real prefect-aws ECS worker submits us-prices to ECS (moto on loopback).

The pool's template comes from deployments/pools.py and the run's sizes from prefect.yaml's
us-prices entry; only what differs per AWS account (cluster, network ids, the task definition
registered beforehand) is given here. moto runs no containers: the point is the submission.
"""

from __future__ import annotations

import asyncio
import uuid
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.utilities.templating import resolve_variables

from deployments.pools import ecs_template
from tasks.settings import Settings
from tests.deployments.stack import BIN, ROOT, run, stack_env
from tests.fakes.aws import EXECUTION_ROLE_ARN, REGION, FakeAws

pytestmark = pytest.mark.integration


def us_prices_spec() -> dict:
    """prefect.yaml's us-prices deployment, anchors resolved, and the project's pull steps."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "us-prices")
    return {**deployment, "pull": spec.get("pull")}


@pytest.fixture
def aws():
    with FakeAws() as fake:
        yield fake


@pytest.fixture
def fargate_route(aws):
    """A cluster, network and task definition in moto; an ecs pool from our template on them."""
    suffix = uuid.uuid4().hex[:8]
    cluster = f"investflow-moto-{suffix}"
    aws.create_fargate_cluster(cluster)
    vpc_id, subnet_id, group_id = aws.create_network()
    settings = Settings(
        aws_region=REGION,
        ecs_cluster=cluster,
        ecs_vpc_id=vpc_id,
        ecs_subnets=[subnet_id],
        ecs_security_groups=[group_id],
        ecs_execution_role_arn=EXECUTION_ROLE_ARN,
    )
    task_definition_arn = aws.register_task_definition("investflow-flows", settings.ingestion_image)
    pool = f"fargate-moto-{suffix}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name=pool, type="ecs", base_job_template=ecs_template(settings))
        )
    yield {
        "pool": pool,
        "cluster": cluster,
        "vpc_id": vpc_id,
        "subnet_id": subnet_id,
        "group_id": group_id,
        "task_definition_arn": task_definition_arn,
        "settings": settings,
    }
    with get_client(sync_client=True) as client:
        client.delete_work_pool(pool)


def deploy_us_prices(client, pool: str, name: str, **extra_job_variables) -> UUID:
    """us-prices as prefect.yaml declares it, on pool, plus account-specific job variables."""
    from flows.prices import ingest_us_prices

    spec = us_prices_spec()
    return client.create_deployment(
        flow_id=client.create_flow(ingest_us_prices),
        name=name,
        work_pool_name=pool,
        entrypoint=spec["entrypoint"],
        job_variables={**spec["work_pool"]["job_variables"], **extra_job_variables},
        pull_steps=spec["pull"],
        tags=spec.get("tags"),
    )


def start_ecs_worker_once(pool: str, aws: FakeAws) -> str:
    """`prefect worker start --type ecs --run-once`: one poll, every due run submitted."""
    args = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "ecs"]
    args += ["--name", "test-ecs-moto", "--run-once"]
    env = stack_env(
        **aws.env(),
        # A rejected submission fails in a second here, rather than after a minute of retries.
        AWS_MAX_ATTEMPTS="1",
        PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS="1",
    )
    return run(args, env, timeout=60)


def run_environment(task: dict) -> dict[str, str]:
    (container,) = task["overrides"]["containerOverrides"]
    return {e["name"]: e["value"] for e in container["environment"]}


# As deployments/pools.py sets it: FARGATE_SPOT first; FARGATE on demand takes a share so a
# run lands when Spot is scarce. With weights 4:1 and base 0 about one task in five runs on
# FARGATE.
SPOT_FIRST = [
    {"capacityProvider": "FARGATE_SPOT", "weight": 4, "base": 0},
    {"capacityProvider": "FARGATE", "weight": 1, "base": 0},
]


def test_ecs_worker_asks_for_fargate_spot_first_at_256_512(aws, fargate_route):
    route = fargate_route
    assert us_prices_spec()["work_pool"]["name"] == "fargate"
    with get_client(sync_client=True) as client:
        # One run on a task definition registered beforehand (an operator's own), one on the
        # definition the worker registers from the pool's template.
        registered = deploy_us_prices(
            client,
            route["pool"],
            f"us-prices-registered-{route['pool']}",
            task_definition_arn=route["task_definition_arn"],
        )
        templated = deploy_us_prices(client, route["pool"], f"us-prices-template-{route['pool']}")
        runs = {
            "registered": client.create_flow_run_from_deployment(registered).id,
            "templated": client.create_flow_run_from_deployment(templated).id,
        }
    try:
        out = start_ecs_worker_once(route["pool"], aws)

        tasks = aws.tasks(route["cluster"])
        by_run = {run_environment(t).get("PREFECT__FLOW_RUN_ID"): t for t in tasks}
        assert set(by_run) == {str(i) for i in runs.values()}, out
        # moto does not model Spot placement: it puts every task on the first provider of the
        # strategy, so the task's capacityProviderName proves nothing about where AWS would
        # run it. What the worker controls, and what is checked, is the strategy it sent.
        run_task = {run_environment(b).get("PREFECT__FLOW_RUN_ID"): b for b in aws.sent("RunTask")}
        assert set(run_task) == set(by_run), out
        for kind, flow_run_id in runs.items():
            sent = run_task[str(flow_run_id)]
            assert sent["capacityProviderStrategy"] == SPOT_FIRST, (kind, sent)
            assert "launchType" not in sent, kind  # RunTask refuses both together
            assert sent["cluster"] == route["cluster"], kind
            task = by_run[str(flow_run_id)]
            overrides = task["overrides"]
            assert (overrides["cpu"], overrides["memory"]) == ("256", "512"), kind
            (container,) = overrides["containerOverrides"]
            assert container["name"] == "prefect"
            assert (container["cpu"], container["memory"]) == (256, 512), kind
            assert container["command"] == ["prefect", "flow-run", "execute"], kind
            assert run_environment(task)["INVESTFLOW_CODE_DIR"] == "/opt/investflow"
            # In the pool's subnet: the template's network configuration, from settings.
            eni = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
            assert eni["subnetId"] == route["subnet_id"], kind
            (interface,) = aws.client("ec2").describe_network_interfaces(
                NetworkInterfaceIds=[eni["networkInterfaceId"]]
            )["NetworkInterfaces"]
            assert [g["GroupId"] for g in interface["Groups"]] == [route["group_id"]], kind

        assert by_run[str(runs["registered"])]["taskDefinitionArn"] == route["task_definition_arn"]
        # The definition the worker registered carries the template's sizes, image and logs.
        arn = by_run[str(runs["templated"])]["taskDefinitionArn"]
        assert arn != route["task_definition_arn"]
        definition = aws.client("ecs").describe_task_definition(taskDefinition=arn)
        definition = definition["taskDefinition"]
        settings = route["settings"]
        assert (definition["cpu"], definition["memory"]) == ("256", "512")
        assert definition["requiresCompatibilities"] == ["FARGATE"]
        assert definition["networkMode"] == "awsvpc"
        assert definition["executionRoleArn"] == EXECUTION_ROLE_ARN
        (container_definition,) = definition["containerDefinitions"]
        # The pool's default image: the ingestion one, built without torch, oci or matplotlib.
        assert container_definition["image"] == settings.ingestion_image
        logs = container_definition["logConfiguration"]
        assert logs["logDriver"] == "awslogs"
        assert logs["options"]["awslogs-group"] == settings.ecs_log_group
        assert logs["options"]["awslogs-region"] == REGION

        with get_client(sync_client=True) as client:
            for kind, flow_run_id in runs.items():
                submitted = client.read_flow_run(flow_run_id)
                # Pending until the container reports in, which moto's never will.
                assert submitted.state.is_pending(), (kind, submitted.state)
                task_arn = by_run[str(flow_run_id)]["taskArn"]
                assert submitted.infrastructure_pid.endswith(task_arn)
    finally:
        with get_client(sync_client=True) as client:
            for deployment_id in (registered, templated):
                client.delete_deployment(deployment_id)


def test_only_the_cpu_fallback_leaves_the_pools_ingestion_image():
    """predict-returns-cpu names the CPU model image, a Variable the bootstrap sets."""
    from prefect.variables import Variable

    from deployments.bootstrap import apply_cpu_image
    from deployments.pools import CPU_IMAGE_VARIABLE

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    on_fargate = {d["name"]: d for d in spec["deployments"] if d["work_pool"]["name"] == "fargate"}
    own_image = {
        name: d["work_pool"]["job_variables"]["image"]
        for name, d in on_fargate.items()
        if "image" in d["work_pool"].get("job_variables", {})
    }
    assert set(own_image) == {"predict-returns-cpu"}
    assert set(on_fargate) - set(own_image) == {
        "us-prices",
        "kr-prices",
        "macro",
        "universes-us",
        "universes-kr",
        "us-market-prices",
        "kr-market-prices",
    }

    before = Variable.get(CPU_IMAGE_VARIABLE)
    image = f"registry.example/investflow-cpu:{uuid.uuid4().hex[:12]}"
    try:
        apply_cpu_image(image)
        # What `prefect deploy` does with the entry's job variables before sending them.
        resolved = asyncio.run(resolve_variables(own_image))
        assert resolved == {"predict-returns-cpu": image}
    finally:
        if before is None:
            Variable.unset(CPU_IMAGE_VARIABLE)
        else:
            Variable.set(CPU_IMAGE_VARIABLE, before, overwrite=True)
