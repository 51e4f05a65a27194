"""Fargate on this machine: runs the tasks the real ECS worker starts in moto, as containers.

moto records RunTask and answers as ECS does, but runs nothing. This runs each new task of a
cluster the way Fargate would: the task definition's image and command with the run's
overrides and environment, at the task's CPU and memory (`--cpus cpu/1024`, `--memory`, no
swap), on the host network (the stand-ins and the server are on loopback). When a container
stops, the task is stopped in moto and ECS's "Task State Change" event goes to the SQS queue
that `prefect-aws ecs-worker deploy-events` would feed from EventBridge, with what ECS says of
an OOM kill (exit 137, OutOfMemoryError), so the real ECS worker's observer reacts as it
does in AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.aws import REGION, FakeAws

# prefect-aws's observer reads this queue by default (PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_*).
EVENTS_QUEUE = "prefect-ecs-tasks-events"
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")


@dataclass
class Task:
    """One task Fargate ran: what it was given and how it ended."""

    arn: str
    image: str
    command: list[str]
    env: dict[str, str]
    cpu: int
    memory_mb: int
    container: str = ""
    started: float = 0.0
    running_at: float | None = None  # when the flow run went Running, if a test asks
    exit_code: int | None = None
    oom_killed: bool = False
    interrupted: bool = False  # reclaimed by Spot
    peak_memory_bytes: int | None = None
    logs: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def flow_run_id(self) -> str | None:
        return self.env.get("PREFECT__FLOW_RUN_ID")


class FakeFargate:
    """`with FakeFargate(aws, cluster, mounts=[...]) as fargate:` runs the cluster's tasks.

    mounts: host paths bind-mounted read-only at the same path (a stand-in's CA file), the way
    a real task reaches its own secrets. `.tasks` lists every task run so far.
    """

    def __init__(self, aws: FakeAws, cluster: str, mounts: list[str] | None = None) -> None:
        self.aws = aws
        self.cluster = cluster
        self.mounts = mounts or []
        self.tasks: list[Task] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queue_url = ""

    def __enter__(self) -> FakeFargate:
        self._queue_url = self.aws.client("sqs").create_queue(QueueName=EVENTS_QUEUE)["QueueUrl"]
        poller = threading.Thread(target=self._poll, daemon=True, name="fake-fargate")
        poller.start()
        self._threads.append(poller)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for task in self.tasks:
            if task.container and task.exit_code is None:
                subprocess.run(["docker", "kill", task.container], capture_output=True)
        for thread in self._threads:
            thread.join(timeout=30)
        for task in self.tasks:
            if task.container:
                subprocess.run(["docker", "rm", "-f", task.container], capture_output=True)

    def task_for(self, flow_run_id, timeout: float = 120) -> Task:
        """The (latest) task that ran flow_run_id, once it has stopped."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [t for t in self.tasks if t.flow_run_id == str(flow_run_id)]
            if found and found[-1].done.wait(timeout=1):
                return found[-1]
            time.sleep(0.5)
        raise AssertionError(f"no stopped Fargate task for flow run {flow_run_id}")

    def interrupt(self, flow_run_id) -> Task:
        """Reclaim the running task of flow_run_id, as a Spot interruption does (SIGKILL)."""
        (task,) = [
            t for t in self.tasks if t.flow_run_id == str(flow_run_id) and not t.done.is_set()
        ]
        task.interrupted = True
        subprocess.run(["docker", "kill", task.container], capture_output=True, check=True)
        return task

    # -- what Fargate does
    def _poll(self) -> None:
        ecs = self.aws.client("ecs")
        while not self._stop.is_set():
            arns = ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING")["taskArns"]
            new = [a for a in arns if a not in self._seen]
            if new:
                described = ecs.describe_tasks(cluster=self.cluster, tasks=new)["tasks"]
                for described_task in described:
                    self._seen.add(described_task["taskArn"])
                    task = self._task(ecs, described_task)
                    self.tasks.append(task)
                    thread = threading.Thread(target=self._run, args=(task,), daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._stop.wait(0.5)

    def _task(self, ecs, described: dict) -> Task:
        definition = ecs.describe_task_definition(taskDefinition=described["taskDefinitionArn"])
        definition = definition["taskDefinition"]
        (container,) = definition["containerDefinitions"]
        overrides = described.get("overrides", {})
        override = next(
            (o for o in overrides.get("containerOverrides", []) if o["name"] == container["name"]),
            {},
        )
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        env.update({e["name"]: e["value"] for e in override.get("environment", [])})
        return Task(
            arn=described["taskArn"],
            image=container["image"],
            command=override.get("command") or container.get("command") or [],
            env=env,
            cpu=int(overrides.get("cpu") or definition["cpu"]),
            memory_mb=int(overrides.get("memory") or definition["memory"]),
        )

    def _run(self, task: Task) -> None:
        # A cgroup of the task's own above the container's, so its peak outlives the container.
        parent = f"investflow-fargate-{uuid.uuid4().hex[:12]}"
        args = ["docker", "run", "--detach", "--network", "host"]
        args += [f"--cpus={task.cpu / 1024:g}", f"--memory={task.memory_mb}m"]
        args += [f"--memory-swap={task.memory_mb}m", f"--cgroup-parent=/{parent}"]
        for path in self.mounts:
            args += ["--volume", f"{path}:{path}:ro"]
        for key, value in task.env.items():
            args += ["--env", f"{key}={value}"]
        task.started = time.time()
        proc = subprocess.run([*args, task.image, *task.command], capture_output=True, text=True)
        if proc.returncode != 0:
            task.logs = proc.stderr
            task.exit_code = proc.returncode
            self._stopped(task, f"CannotStartContainerError: {proc.stderr.strip()[-300:]}")
            return
        task.container = proc.stdout.strip()
        subprocess.run(["docker", "wait", task.container], capture_output=True)
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
        if task.interrupted:
            self._stopped(task, "Your Spot Task was interrupted.", "SpotInterruption")
        else:
            self._stopped(task, "Essential container in task exited")
        subprocess.run(["docker", "rm", task.container], capture_output=True)
        _remove_cgroup(parent)

    def _stopped(self, task: Task, reason: str, code: str = "EssentialContainerExited") -> None:
        """Stop the task in moto and send ECS's state-change event, as AWS would."""
        ecs = self.aws.client("ecs")
        ecs.stop_task(cluster=self.cluster, task=task.arn, reason=reason)
        container = {"name": "prefect", "lastStatus": "STOPPED", "exitCode": task.exit_code}
        if task.oom_killed:
            container["reason"] = "OutOfMemoryError: Container killed due to memory usage"
        detail = {
            "taskArn": task.arn,
            "clusterArn": ecs.describe_clusters(clusters=[self.cluster])["clusters"][0][
                "clusterArn"
            ],
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "stopCode": code,
            "stoppedReason": reason,
            "containers": [container],
            "cpu": str(task.cpu),
            "memory": str(task.memory_mb),
        }
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": task.arn.split(":")[4],
            "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [task.arn],
            "detail": detail,
        }
        self.aws.client("sqs").send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(event))
        task.done.set()


def _remove_cgroup(name: str) -> None:
    """Remove the task's (now empty) cgroup from every controller docker made it in."""
    for path in CGROUP_MEMORY.parent.glob(f"*/{name}"):
        for _ in range(20):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:  # the container's own cgroup below it goes a moment later
                time.sleep(0.1)
