"""The work pools (routes) as code: each pool's type, budget and base job template."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from deployments.alert_rules import HEARTBEAT
from tasks.settings import Settings

# Every flow run, on every route, sends a heartbeat this often: the zombie rule
# (deployments/alert_rules.py) marks a run Crashed after three missed ones.
# A run rides out a server restart: its client retries a refused call 7 times, backing off
# 2, 4, ... 128 s (about 4 minutes in all); Prefect's default 5 gives up after about a minute,
# before a server that restarts under load (RestartSec plus its start) answers again.
RUN_ENV = {
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(int(HEARTBEAT.total_seconds())),
    "PREFECT_CLIENT_MAX_RETRIES": "7",
}


def worker_command(
    prefect: str, pool: str, name: str, kind: str = "process", limit: int | None = None
) -> list[str]:
    """`prefect worker start` serving pool, as every worker starts: `make up` (a process
    worker per pool), the systemd units (the pool's real kind, at most limit runs at once;
    deployments/units.py) and the tests. The pool must exist (the bootstrap makes it) and the
    worker's package is installed with the route's lock, never at start."""
    argv = [prefect, "worker", "start", "--pool", pool, "--type", kind, "--name", name]
    return [
        *argv,
        *(["--limit", str(limit)] if limit else []),
        "--install-policy",
        "never",
        "--no-create-pool-if-not-found",
    ]


@dataclass(frozen=True)
class Pool:
    name: str
    type: str  # the real worker type; `make up` serves every pool with a process worker
    budget: str
    description: str


POOLS = (
    Pool(
        "fargate",
        "ecs",
        "0.25 vCPU / 512 MB per ingestion task; 1 vCPU / 2 GB CPU inference",
        "AWS ECS Fargate (ap-northeast-2), FARGATE_SPOT first: price and macro ingestion, "
        "and predict-returns on CPU when the desktop is away.",
    ),
    Pool(
        "gpu-desktop",
        "docker",
        "RTX 4060 Ti, 8 GB GPU memory",
        "Home desktop behind NAT, often asleep; its worker only pulls: train-model and "
        "predict-returns on CUDA.",
    ),
    Pool(
        "oracle-osaka",
        "process",
        "a job must stay under ~200 MB",
        "Oracle 1 (Osaka), the data node beside TimescaleDB and Redis: backups and their "
        "verification.",
    ),
    Pool(
        "oracle-chuncheon",
        "process",
        "under ~400 MB",
        "Oracle 2 (Chuncheon), 1 GB edge node: the A1 launch retry.",
    ),
    Pool(
        "oracle-mumbai",
        "process",
        "under ~400 MB",
        "Oracle 3 (Mumbai), 1 GB edge node: standby for the light jobs.",
    ),
)
POOL_NAMES = tuple(p.name for p in POOLS)

# The pool's default Fargate task size, what ingestion needs; the CPU inference fallback asks
# for a bigger one in prefect.yaml (fargate_inference).
FARGATE_INGEST = {"cpu": 256, "memory": 512}
# Spot first; FARGATE (on demand) takes a share so a run still lands when Spot is scarce.
CAPACITY_PROVIDER_STRATEGY = [
    {"capacityProvider": "FARGATE_SPOT", "weight": 4, "base": 0},
    {"capacityProvider": "FARGATE", "weight": 1, "base": 0},
]


# The Prefect Variable holding the CPU model image, set by the bootstrap's pools step from the
# settings; prefect.yaml's predict-returns-cpu reads it, as `prefect deploy` resolves it there.
CPU_IMAGE_VARIABLE = "investflow_cpu_image"


def _set_defaults(template: dict, defaults: dict) -> dict:
    template = copy.deepcopy(template)
    props = template["variables"]["properties"]
    for key, value in defaults.items():
        props[key]["default"] = value
    return template


def ecs_template(settings: Settings) -> dict:
    """The fargate pool: the ECS worker's template with our cluster, network and sizes."""
    from prefect_aws.workers.ecs_worker import ECSWorker

    return _set_defaults(
        ECSWorker.get_default_base_job_template(),
        {
            "cluster": settings.ecs_cluster,
            # us-prices, kr-prices and macro run it; predict-returns-cpu names its own image.
            "image": settings.ingestion_image,
            "capacity_provider_strategy": CAPACITY_PROVIDER_STRATEGY,
            "cpu": FARGATE_INGEST["cpu"],
            "memory": FARGATE_INGEST["memory"],
            "execution_role_arn": settings.ecs_execution_role_arn,
            # The worker wraps this in awsvpcConfiguration itself, and checks the subnets
            # against vpc_id; with no subnets it uses the default VPC's.
            "vpc_id": settings.ecs_vpc_id,
            "network_configuration": (
                {
                    "subnets": settings.ecs_subnets,
                    "securityGroups": settings.ecs_security_groups,
                    "assignPublicIp": "ENABLED",
                }
                if settings.ecs_subnets
                else {}
            ),
            "configure_cloudwatch_logs": True,
            "cloudwatch_logs_options": {
                "awslogs-group": settings.ecs_log_group,
                "awslogs-region": settings.aws_region,
                "awslogs-create-group": "true",
            },
            "env": {"INVESTFLOW_CODE_DIR": "/opt/investflow", **RUN_ENV},
        },
    )


def docker_template(settings: Settings) -> dict:
    """The gpu-desktop pool: the CUDA image, with every GPU handed to the container."""
    from prefect_docker.worker import DockerWorker

    return _set_defaults(
        DockerWorker.get_default_base_job_template(),
        {
            "image": settings.gpu_image,
            "image_pull_policy": "IfNotPresent",
            "auto_remove": True,
            "env": {"INVESTFLOW_CODE_DIR": "/opt/investflow", **RUN_ENV},
            # docker-py's DeviceRequest as a dict: the equivalent of `docker run --gpus all`.
            "container_create_kwargs": {
                "device_requests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]
            },
        },
    )


def process_template() -> dict:
    from prefect.workers.process import ProcessWorker

    return _set_defaults(ProcessWorker.get_default_base_job_template(), {"env": RUN_ENV})


def base_job_template(pool: Pool, settings: Settings, *, local: bool) -> dict:
    if local or pool.type == "process":
        return process_template()
    if pool.type == "ecs":
        return ecs_template(settings)
    return docker_template(settings)
