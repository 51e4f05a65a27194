"""Oracle Cloud Compute for the A1 launch: SDK clients, error classification, thin launch I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from blocks.oci import OciCredentials
from tasks.oci.moves import Plan

# States in which an instance with our display name counts as "ours already exists".
ALIVE_STATES = frozenset({"PROVISIONING", "STARTING", "RUNNING", "STOPPING", "STOPPED"})

CAPACITY, THROTTLE, TRANSIENT, SHAPE_MISSING, LIMIT, FATAL = (
    "capacity",
    "throttle",
    "transient",
    "shape-missing",
    "limit",
    "fatal",
)
_SHAPE_NOT_FOUND = re.compile(r"shape\b.*\bnot found", re.I)


@dataclass(frozen=True)
class Failure:
    """One refused or failed OCI call, classified for the retry policy."""

    kind: str
    status: int | None
    code: str | None
    message: str
    request_id: str | None = None

    def describe(self) -> str:
        where = f" (opc-request-id {self.request_id})" if self.request_id else ""
        return f"{self.status or '-'} {self.code or type(self).__name__}: {self.message}{where}"


def classify(status: int | None, code: str | None, message: str | None) -> str:
    """Map an OCI answer to capacity/throttle/transient/shape-missing/limit/fatal."""
    message = message or ""
    if status is None or status in (502, 503, 504):
        return TRANSIENT  # no answer, or a gateway hiccup: the same request may be retried
    if status == 429:
        return THROTTLE
    if status == 500:
        # OCI reports "Out of host capacity" as 500 InternalError; a bare 500 is retried alike.
        return CAPACITY
    if status == 404 and _SHAPE_NOT_FOUND.search(message):
        return SHAPE_MISSING
    if status == 400 and code == "LimitExceeded":
        return LIMIT
    if status == 409 and code == "IncorrectState":
        return TRANSIENT
    return FATAL  # 400 InvalidParameter, 401 NotAuthenticated, 404 NotAuthorizedOrNotFound, ...


def limit_persists(name: str, streak: int, ocpus: float, memory_gbs: float, last: Failure) -> str:
    """What LimitExceeded means once it outlasts limit_exceeded_attempts, and what to do."""
    return (
        f"OCI answered LimitExceeded {streak} times in a row and no instance named {name!r} is "
        f"in the compartment, so this is no longer the limit counters lagging: the tenancy's "
        f"A1 limits are in use (another instance, another name or compartment) or too low "
        f"for {ocpus:g} OCPU / {memory_gbs:g} GB. Check Limits, Quotas and Usage in the OCI "
        f"console, free or raise the limit, then run again (the next run waits through "
        f"{streak} more such answers; parameter limit_exceeded_attempts). "
        f"Last answer: {last.describe()}"
    )


def failure_from(exc: BaseException) -> Failure:
    """Classify an exception raised by the SDK (ServiceError, timeout, connection error)."""
    import oci
    from oci._vendor.requests.exceptions import RequestException  # the SDK's vendored requests

    if isinstance(exc, oci.exceptions.ServiceError):
        kind = classify(exc.status, exc.code, exc.message)
        return Failure(kind, exc.status, exc.code, str(exc.message or ""), exc.request_id)
    if isinstance(exc, (RequestException, TimeoutError, ConnectionError)):
        # the message of a requests error names only the URL, never credentials
        return Failure(TRANSIENT, None, type(exc).__name__, str(exc)[:300])
    raise exc


@dataclass
class OciClients:
    compute: Any
    identity: Any
    network: Any
    tenancy: str


def build_clients(
    credentials: OciCredentials, endpoint: str | None, timeout_s: float = 30.0
) -> OciClients:
    """Build the clients with our retry policy only: no SDK retries, no circuit breaker."""
    import oci

    config = credentials.oci_config()
    signer = oci.signer.Signer(
        tenancy=config["tenancy"],
        user=config["user"],
        fingerprint=config["fingerprint"],
        private_key_file_location=config.get("key_file"),
        pass_phrase=config.get("pass_phrase"),
        private_key_content=config.get("key_content"),
    )
    kwargs: dict[str, Any] = {
        "signer": signer,
        "retry_strategy": oci.retry.NoneRetryStrategy(),
        "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
        "timeout": (min(10.0, timeout_s), timeout_s),
    }
    if endpoint:
        kwargs["service_endpoint"] = endpoint.rstrip("/")
    return OciClients(
        compute=oci.core.ComputeClient(config, **kwargs),
        identity=oci.identity.IdentityClient(config, **kwargs),
        network=oci.core.VirtualNetworkClient(config, **kwargs),
        tenancy=config["tenancy"],
    )


def launch_details(plan: Plan, availability_domain: str):
    """The LaunchInstanceDetails of one attempt in one availability domain."""
    from oci.core import models

    return models.LaunchInstanceDetails(
        availability_domain=availability_domain,
        compartment_id=plan.compartment_id,
        display_name=plan.display_name,
        shape=plan.shape,
        shape_config=models.LaunchInstanceShapeConfigDetails(
            ocpus=plan.ocpus, memory_in_gbs=plan.memory_gbs
        ),
        source_details=models.InstanceSourceViaImageDetails(
            image_id=plan.image_id, boot_volume_size_in_gbs=plan.boot_volume_gbs
        ),
        create_vnic_details=models.CreateVnicDetails(
            subnet_id=plan.subnet_id, assign_public_ip=plan.assign_public_ip
        ),
        metadata={"ssh_authorized_keys": plan.ssh_public_key} if plan.ssh_public_key else None,
    )


@task(name="find-instance", cache_policy=NONE)
def find_instance(clients: OciClients, compartment_id: str, display_name: str):
    """Return the live instance with this display name (see ALIVE_STATES), or None."""
    import oci

    found = oci.pagination.list_call_get_all_results(
        clients.compute.list_instances, compartment_id, display_name=display_name
    ).data
    alive = [
        i for i in found if i.display_name == display_name and i.lifecycle_state in ALIVE_STATES
    ]
    return alive[0] if alive else None


@task(name="list-availability-domains", cache_policy=NONE)
def list_availability_domains(clients: OciClients) -> list[str]:
    """Every availability domain of the region, in OCI's order."""
    return [ad.name for ad in clients.identity.list_availability_domains(clients.tenancy).data]


@task(name="try-launch", cache_policy=NONE)
def try_launch(clients: OciClients, details, retry_token: str):
    """One LaunchInstance call: the Instance, or the classified Failure (never raises for OCI)."""
    try:
        return clients.compute.launch_instance(details, opc_retry_token=retry_token).data
    except Exception as exc:  # noqa: BLE001 - failure_from re-raises anything it cannot classify
        return failure_from(exc)


@task(name="find-public-ip", cache_policy=NONE)
def find_public_ip(clients: OciClients, compartment_id: str, instance_id: str) -> str | None:
    """The public IP of the instance's primary VNIC once assigned, else None."""
    attachments = clients.compute.list_vnic_attachments(
        compartment_id, instance_id=instance_id
    ).data
    for attachment in attachments:
        if attachment.lifecycle_state == "ATTACHED" and attachment.vnic_id:
            vnic = clients.network.get_vnic(attachment.vnic_id).data
            if vnic.public_ip:
                return vnic.public_ip
    return None
