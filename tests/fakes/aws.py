"""A local AWS stand-in for the fargate route: moto's server mode (ECS, EC2) on loopback."""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import urllib.request

import boto3
from moto.ecs.models import EC2ContainerServiceBackend
from moto.moto_api import recorder
from moto.server import ThreadedMotoServer

ACCESS_KEY = "investflow-test-key"
SECRET_KEY = "investflow-test-secret"
REGION = "ap-northeast-2"
# moto's default account; it accepts any role ARN, it never assumes one.
EXECUTION_ROLE_ARN = "arn:aws:iam::123456789012:role/investflow-ecs-execution"


class FakeAws:
    """`with FakeAws() as aws:` starts moto on 127.0.0.1:<free port>; `.url` is its endpoint.

    `.env()` is what a worker needs to reach it through the ordinary AWS variables;
    `.sent(action)` the bodies of the requests of that action moto received, as its recorder
    kept them (what describe calls return is moto's model of the result, not the request).
    """

    def __init__(self):
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""
        self._recording = ""
        self._recorder_file = ""

    def __enter__(self) -> FakeAws:
        # moto's server logs every request at INFO: a test's output would be nothing else.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _size_fargate_tasks_like_aws(True)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        # moto picks the recorder's file once, at import (MOTO_RECORDER_FILEPATH, else
        # ./moto_recording): give this server a file of its own outside the checkout.
        fd, self._recording = tempfile.mkstemp(prefix="moto-recording-", suffix=".jsonl")
        os.close(fd)
        self._recorder_file, recorder._location = recorder._location, self._recording
        self._moto_api("reset-recording")
        self._moto_api("start-recording")
        return self

    def __exit__(self, *exc) -> None:
        self._moto_api("stop-recording")
        self._server.stop()
        recorder._location = self._recorder_file
        os.unlink(self._recording)
        _size_fargate_tasks_like_aws(False)

    def _moto_api(self, action: str) -> bytes:
        method = "GET" if action.startswith("download") else "POST"
        url = f"{self.url}/moto-api/recorder/{action}"
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return r.read()

    def sent(self, action: str) -> list[dict]:
        """The JSON bodies of every request for action (e.g. "RunTask") that moto received."""
        bodies = []
        for line in self._moto_api("download-recording").decode().splitlines():
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            if headers.get("x-amz-target", "").rsplit(".", 1)[-1] != action:
                continue
            body = entry["body"]
            bodies.append(json.loads(base64.b64decode(body) if entry["body_encoded"] else body))
        return bodies

    def env(self) -> dict[str, str]:
        return {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_fargate_cluster(self, name: str) -> str:
        """An ECS cluster with both Fargate capacity providers, as the console creates it."""
        cluster = self.client("ecs").create_cluster(
            clusterName=name, capacityProviders=["FARGATE", "FARGATE_SPOT"]
        )
        return cluster["cluster"]["clusterArn"]

    def create_network(self) -> tuple[str, str, str]:
        """A VPC with one subnet and one security group; return their ids."""
        ec2 = self.client("ec2")
        vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        # As Fargate VPCs usually are; moto also fails RunTask without it (no ENI DNS name).
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
        subnet_id = ec2.create_subnet(
            VpcId=vpc_id, CidrBlock="10.42.1.0/24", AvailabilityZone=f"{REGION}a"
        )["Subnet"]["SubnetId"]
        group_id = ec2.create_security_group(
            GroupName="investflow-flows", Description="investflow flow runs", VpcId=vpc_id
        )["GroupId"]
        return vpc_id, subnet_id, group_id

    def register_task_definition(self, family: str, image: str) -> str:
        """A Fargate task definition with the Prefect container, as deployments/ ships it."""
        response = self.client("ecs").register_task_definition(
            family=family,
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            executionRoleArn=EXECUTION_ROLE_ARN,
            containerDefinitions=[
                {"name": "prefect", "image": image, "essential": True, "memory": 512}
            ],
        )
        return response["taskDefinition"]["taskDefinitionArn"]

    def tasks(self, cluster: str) -> list[dict]:
        """Every task run in cluster, described."""
        ecs = self.client("ecs")
        arns = ecs.list_tasks(cluster=cluster)["taskArns"]
        if not arns:
            return []
        return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]


_moto_requirements = EC2ContainerServiceBackend._calculate_task_resource_requirements


def _task_level_requirements(task_definition) -> dict:
    """Size a Fargate task from its task-level cpu/memory when its containers carry none."""
    containers = task_definition.container_definitions
    if task_definition.memory and any(
        "memory" not in c and "memoryReservation" not in c for c in containers
    ):
        return {
            "CPU": int(task_definition.cpu or 0),
            "MEMORY": int(task_definition.memory),
            "PORTS": [],
            "PORTS_UDP": [],
        }
    return _moto_requirements(task_definition)


def _size_fargate_tasks_like_aws(on: bool) -> None:
    # moto 5.2 adds up container-level memory only, so RunTask answers 500 (a TypeError) for
    # the definitions the ECS worker registers: Fargate sizes the task, not the container.
    # The server runs in this process, so its backend can be corrected here.
    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(
        _task_level_requirements if on else _moto_requirements
    )
