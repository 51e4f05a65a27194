"""A local OCI Compute/Identity stand-in that the real oci SDK talks to, plus a test API key."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.base import FakeServer, Request, Response

API = "/20160918"
REGION = "ap-chuncheon-1"
ADS = ("Uocm:AP-CHUNCHEON-1-AD-1", "Uocm:AP-CHUNCHEON-1-AD-2", "Uocm:AP-CHUNCHEON-1-AD-3")

# Error bodies as OCI sends them: the flow classifies on status, code and message.
ERRORS: dict[str, tuple[int, str, str]] = {
    "capacity": (500, "InternalError", "Out of host capacity."),
    "throttle": (429, "TooManyRequests", "Too many requests for the user"),
    "auth": (
        401,
        "NotAuthenticated",
        "The required information to complete authentication was not provided or was incorrect.",
    ),
    "limit": (
        400,
        "LimitExceeded",
        "The following service limits were exceeded: standard-a1-core-count. Request a service "
        "limit increase from the service limits page in the console.",
    ),
    "shape": (404, "NotAuthorizedOrNotFound", "shape VM.Standard.A1.Flex not found"),
    "bad-param": (400, "InvalidParameter", "Invalid shapeConfig: ocpus must be at least 1"),
    "not-found": (
        404,
        "NotAuthorizedOrNotFound",
        "Authorization failed or requested resource not found.",
    ),
    "unavailable": (503, "ServiceUnavailable", "Service is unavailable, please retry."),
}


@dataclass
class ApiKey:
    """A freshly generated API signing key, as a user would upload it to OCI."""

    pem: str
    fingerprint: str
    public_key: rsa.RSAPublicKey
    user: str = "ocid1.user.oc1..aaaaaaaatestuser"
    tenancy: str = "ocid1.tenancy.oc1..aaaaaaaatesttenancy"


def make_api_key() -> ApiKey:
    """Generate an RSA key the way `oci setup keys` does, with its OCI fingerprint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.md5(der).hexdigest()  # noqa: S324 - OCI fingerprints are MD5 by definition
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, 32, 2))
    return ApiKey(pem, fingerprint, key.public_key())


class FakeClock:
    """A clock and a sleep for flows: sleeping advances time at once and is recorded."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


class FakeOci(FakeServer):
    """ListInstances, LaunchInstance, ListVnicAttachments, GetVnic, ListAvailabilityDomains.

    script_launch("capacity", "capacity", "ok") sets what the next launches answer (then
    `default`); ad_outcome[ad] = "shape" makes one AD always answer that. launches counts
    LaunchInstance calls; launch_requests keeps their headers and bodies.

    Service limits as OCI enforces them, before capacity: with a1_core_limit set, a launch
    whose OCPUs would take the tenancy's A1 cores past it answers 400 LimitExceeded. OCI counts
    every live instance, listed yet or not, and its counters lag: counters_lag(cores, n) keeps
    cores counted that no instance holds for the next n launches.
    """

    def __init__(self, key: ApiKey | None = None, ads=ADS, default: str = "ok") -> None:
        super().__init__()
        self.key = key
        self.ads = list(ads)
        self.default = default
        self.script: list[str] = []
        self.ad_outcome: dict[str, str] = {}
        self.instances: list[dict] = []
        self.hidden_lists: dict[str, int] = {}  # instance id -> list calls it stays hidden from
        self.launch_requests: list[Request] = []
        self.by_token: dict[str, dict] = {}
        self.public_ip: str | None = "203.0.113.10"
        self.bad_signatures = 0
        self.a1_core_limit: float | None = None
        self.lagging_cores, self.lag_launches = 0.0, 0
        self._oci_lock = threading.Lock()

    # -- scripting
    def script_launch(self, *outcomes: str) -> None:
        self.script.extend(outcomes)

    def add_instance(self, display_name, state="RUNNING", ad=None, hidden_lists=0, ocpus=2.0):
        compartment = "ocid1.compartment.oc1..test"
        inst = self._instance(display_name, ad or self.ads[0], compartment, state, ocpus)
        self.hidden_lists[inst["id"]] = hidden_lists
        return inst

    def counters_lag(self, cores: float, launches: int) -> None:
        """Count cores no instance holds for the next launches (a terminated one, say)."""
        self.lagging_cores, self.lag_launches = cores, launches

    def a1_cores_counted(self) -> float:
        """The A1 cores OCI's counters hold now: live instances, listed or not, plus any lag."""
        live = sum(
            i["shapeConfig"]["ocpus"]
            for i in self.instances
            if i["lifecycleState"] != "TERMINATED" and ".A1." in i["shape"]
        )
        return live + (self.lagging_cores if self.lag_launches > 0 else 0.0)

    @property
    def launches(self) -> int:
        return len(self.launch_requests)

    # -- routes
    def route(self, req: Request) -> Response:
        if not self._signed(req):
            return self._error("auth")
        path = req.path.removeprefix(API)
        if req.method == "GET" and path == "/availabilityDomains":
            return self._ok(
                [{"name": ad, "compartmentId": req.query.get("compartmentId")} for ad in self.ads]
            )
        if req.method == "GET" and path == "/instances":
            return self._ok(self._list(req.query))
        if req.method == "POST" and path == "/instances":
            return self._launch(req)
        if req.method == "GET" and path == "/vnicAttachments":
            iid = req.query.get("instanceId")
            return self._ok(
                [
                    {
                        "id": f"ocid1.vnicattachment.{iid}",
                        "instanceId": iid,
                        "vnicId": f"ocid1.vnic.{iid}",
                        "lifecycleState": "ATTACHED",
                        "availabilityDomain": self.ads[0],
                    }
                ]
            )
        if req.method == "GET" and path.startswith("/vnics/"):
            return self._ok(
                {
                    "id": path.rsplit("/", 1)[1],
                    "publicIp": self.public_ip,
                    "privateIp": "10.0.0.23",
                    "lifecycleState": "AVAILABLE",
                }
            )
        return Response(404, {"code": "NotAuthorizedOrNotFound", "message": "no such route"})

    def _list(self, query: dict[str, str]) -> list[dict]:
        name = query.get("displayName")
        found = []
        with self._oci_lock:
            for inst in self.instances:
                if inst["compartmentId"] != query.get("compartmentId"):
                    continue  # OCI lists one compartment, never the tenancy
                if self.hidden_lists.get(inst["id"], 0) > 0:
                    self.hidden_lists[inst["id"]] -= 1
                    continue
                if name is None or inst["displayName"] == name:
                    found.append(inst)
        return found

    def _launch(self, req: Request) -> Response:
        body = req.json()
        token = req.headers.get("opc-retry-token")
        with self._oci_lock:
            self.launch_requests.append(req)
            if token and token in self.by_token:  # OCI answers a replayed token with the same one
                return self._ok(self.by_token[token])
            ad = body["availabilityDomain"]
            ocpus = float((body.get("shapeConfig") or {}).get("ocpus") or 1)
            over = (
                self.a1_core_limit is not None
                and ".A1." in body["shape"]
                and self.a1_cores_counted() + ocpus > self.a1_core_limit
            )
            self.lag_launches = max(0, self.lag_launches - 1)
            if over:
                outcome = "limit"
            else:
                outcome = self.ad_outcome.get(ad) or (self.script.pop(0) if self.script else None)
                outcome = outcome or self.default
        if outcome != "ok":
            return self._error(outcome)
        inst = self._instance(
            body["displayName"], ad, body["compartmentId"], "PROVISIONING", ocpus, body["shape"]
        )
        inst.update(imageId=body["sourceDetails"]["imageId"])
        if token:
            self.by_token[token] = inst
        return self._ok(inst)

    # -- helpers
    def _instance(
        self,
        name: str,
        ad: str,
        compartment: str,
        state: str,
        ocpus: float = 2,
        shape: str = "VM.Standard.A1.Flex",
    ) -> dict:
        inst = {
            "id": f"ocid1.instance.oc1.{REGION}.{uuid.uuid4().hex}",
            "displayName": name,
            "availabilityDomain": ad,
            "compartmentId": compartment,
            "lifecycleState": state,
            "region": REGION,
            "shape": shape,
            "shapeConfig": {"ocpus": ocpus, "memoryInGBs": ocpus * 6},
            "timeCreated": "2025-06-15T10:00:00.000Z",
        }
        with self._oci_lock:
            self.instances.append(inst)
        return inst

    def _ok(self, body) -> Response:
        return Response(200, body, {"opc-request-id": f"fake/{uuid.uuid4().hex[:16]}"})

    def _error(self, name: str) -> Response:
        status, code, message = ERRORS[name]
        return Response(
            status,
            {"code": code, "message": message},
            {"opc-request-id": f"fake/{uuid.uuid4().hex[:16]}"},
        )

    def _signed(self, req: Request) -> bool:
        """Check the SDK's HTTP signature: keyId always, the RSA signature on launches."""
        if self.key is None:
            return True
        auth = req.headers.get("Authorization") or req.headers.get("authorization") or ""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', auth))
        expected = f"{self.key.tenancy}/{self.key.user}/{self.key.fingerprint}"
        if fields.get("keyId") != expected:
            self.bad_signatures += 1
            return False
        if req.method != "POST":  # the base server keeps no raw query string to rebuild
            return True
        lower = {k.lower(): v for k, v in req.headers.items()}
        lines = []
        for name in fields.get("headers", "").split():
            value = (
                f"{req.method.lower()} {req.path}" if name == "(request-target)" else lower[name]
            )
            lines.append(f"{name}: {value}")
        try:
            self.key.public_key.verify(
                base64.b64decode(fields["signature"]),
                "\n".join(lines).encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, KeyError, ValueError):
            self.bad_signatures += 1
            return False
        return True
