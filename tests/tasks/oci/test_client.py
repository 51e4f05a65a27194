"""The OCI client: error classification, the credentials block, the real SDK on a stand-in."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from blocks.oci import OciCredentials
from tasks.oci.client import (
    CAPACITY,
    FATAL,
    LIMIT,
    SHAPE_MISSING,
    THROTTLE,
    TRANSIENT,
    build_clients,
    classify,
    failure_from,
    find_instance,
    launch_details,
    list_availability_domains,
    try_launch,
)
from tasks.oci.moves import Plan
from tests.fakes.oci import ADS, ERRORS, FakeOci, make_api_key

COMPARTMENT = "ocid1.compartment.oc1..test"


@pytest.fixture(scope="module")
def api_key():
    return make_api_key()


@pytest.fixture
def creds(api_key):
    return OciCredentials(
        user=api_key.user,
        tenancy=api_key.tenancy,
        fingerprint=api_key.fingerprint,
        region="ap-chuncheon-1",
        private_key=SecretStr(api_key.pem),
    )


@pytest.fixture
def fake(api_key):
    with FakeOci(api_key) as server:
        yield server


def details(ad=ADS[0], name="a1-test"):
    plan = Plan(
        display_name=name,
        compartment_id=COMPARTMENT,
        subnet_id="ocid1.subnet.oc1..s",
        image_id="ocid1.image.oc1..i",
        shape="VM.Standard.A1.Flex",
        ocpus=2,
        memory_gbs=12,
        boot_volume_gbs=50,
        ssh_public_key="ssh-ed25519 AAAAC3Nz test",
        assign_public_ip=True,
    )
    return launch_details(plan, ad)


@pytest.mark.parametrize(
    "scripted, kind",
    [
        ("capacity", CAPACITY),
        ("throttle", THROTTLE),
        ("unavailable", TRANSIENT),
        ("shape", SHAPE_MISSING),
        ("limit", LIMIT),
        ("auth", FATAL),
        ("bad-param", FATAL),
        ("not-found", FATAL),
    ],
)
def test_oci_answers_are_classified_for_the_retry_policy(scripted, kind):
    status, code, message = ERRORS[scripted]
    assert classify(status, code, message) == kind


def test_limit_exceeded_is_told_by_status_and_code_never_by_the_message():
    assert classify(400, "LimitExceeded", "") == LIMIT
    assert classify(400, "LimitExceeded", "worded some other way") == LIMIT
    assert classify(400, "InvalidParameter", "LimitExceeded: service limits were exceeded") == FATAL
    assert classify(409, "LimitExceeded", "") == FATAL


def test_the_sdks_limit_exceeded_error_is_a_limit_failure():
    import oci

    error = oci.exceptions.ServiceError(
        400, "LimitExceeded", {"opc-request-id": "req-1"}, "standard-a1-core-count exceeded"
    )
    failure = failure_from(error)
    assert (failure.kind, failure.status, failure.code) == (LIMIT, 400, "LimitExceeded")
    assert failure.request_id == "req-1"


def test_gateway_errors_and_no_answer_are_transient():
    assert {classify(s, None, "") for s in (502, 503, 504, None)} == {TRANSIENT}


def test_credentials_block_builds_a_config_with_the_key_and_hides_it(creds, api_key):
    config = creds.oci_config()
    assert config["key_content"] == api_key.pem
    assert api_key.pem not in repr(creds) and api_key.pem not in str(creds.model_dump())


def test_credentials_block_reads_a_profile_from_an_oci_config_file(tmp_path, api_key):
    key_file = tmp_path / "key.pem"
    key_file.write_text(api_key.pem)
    (tmp_path / "config").write_text(
        f"[DEFAULT]\nuser=ocid1.user.oc1..other\ntenancy={api_key.tenancy}\n"
        f"fingerprint={api_key.fingerprint}\nregion=ap-osaka-1\nkey_file={key_file}\n"
        f"[A1]\nuser={api_key.user}\ntenancy={api_key.tenancy}\n"
        f"fingerprint={api_key.fingerprint}\nregion=ap-chuncheon-1\nkey_file={key_file}\n"
    )
    config = OciCredentials(profile="A1", config_file=str(tmp_path / "config")).oci_config()
    assert (config["user"], config["region"]) == (api_key.user, "ap-chuncheon-1")


def test_incomplete_credentials_fail_naming_what_is_missing():
    with pytest.raises(ValueError, match="fingerprint"):
        OciCredentials(
            user="ocid1.user.oc1..u",
            tenancy="ocid1.tenancy.oc1..t",
            region="ap-chuncheon-1",
            private_key=SecretStr("x"),
        ).oci_config()


integration = pytest.mark.integration


@integration
def test_real_sdk_signs_requests_and_reaches_the_stand_in(fake, creds):
    clients = build_clients(creds, fake.url, timeout_s=5)
    assert list_availability_domains.fn(clients) == list(ADS)
    fake.script_launch("capacity")
    failure = try_launch.fn(clients, details(), "token-1")
    assert failure.kind == CAPACITY and failure.code == "InternalError"
    assert failure.request_id.startswith("fake/")
    instance = try_launch.fn(clients, details(), "token-2")
    assert instance.lifecycle_state == "PROVISIONING"
    assert fake.bad_signatures == 0 and fake.launches == 2
    sent = fake.launch_requests[-1]
    assert sent.headers["opc-retry-token"] == "token-2"
    assert sent.json()["shapeConfig"] == {"ocpus": 2, "memoryInGBs": 12}
    assert sent.json()["sourceDetails"]["bootVolumeSizeInGBs"] == 50


@integration
def test_sdk_retries_are_off_so_one_call_means_one_request(fake, creds):
    clients = build_clients(creds, fake.url, timeout_s=5)
    fake.script_launch("throttle")
    assert try_launch.fn(clients, details(), "t").kind == THROTTLE
    assert fake.launches == 1  # the SDK did not retry the 429 behind our back


@integration
def test_a_wrong_key_is_refused_as_fatal(fake, creds, api_key):
    other = make_api_key()
    creds.private_key = SecretStr(other.pem)  # same keyId, key that does not match it
    clients = build_clients(creds, fake.url, timeout_s=5)
    failure = try_launch.fn(clients, details(), "t")
    assert failure.kind == FATAL and failure.status == 401 and fake.bad_signatures == 1


@integration
@pytest.mark.parametrize("state", ["RUNNING", "STOPPED", "PROVISIONING"])
def test_find_instance_counts_live_states_and_ignores_terminated(fake, creds, state):
    clients = build_clients(creds, fake.url, timeout_s=5)
    fake.add_instance("a1-other", "RUNNING")
    fake.add_instance("a1-test", "TERMINATED")
    assert find_instance.fn(clients, COMPARTMENT, "a1-test") is None
    live = fake.add_instance("a1-test", state)
    assert find_instance.fn(clients, COMPARTMENT, "a1-test").id == live["id"]
    assert find_instance.fn(clients, "ocid1.compartment.oc1..other", "a1-test") is None


@integration
def test_the_stand_in_enforces_a1_limits_with_lagging_counters(fake, creds):
    clients = build_clients(creds, fake.url, timeout_s=5)
    fake.a1_core_limit = 4
    fake.counters_lag(cores=4, launches=1)  # nothing live, but the counters are behind
    failure = try_launch.fn(clients, details(), "t1")
    assert (failure.kind, failure.status, failure.code) == (LIMIT, 400, "LimitExceeded")
    first = try_launch.fn(clients, details(), "t2")  # the counters caught up
    assert first.lifecycle_state == "PROVISIONING" and first.shape_config.ocpus == 2
    try_launch.fn(clients, details(name="a1-second"), "t3")  # 2 + 2 cores: at the limit
    over = try_launch.fn(clients, details(name="a1-third"), "t4")
    assert over.kind == LIMIT and fake.launches == 4 and len(fake.instances) == 2


@integration
def test_connection_errors_are_transient(creds):
    with FakeOci() as gone:
        url = gone.url
    clients = build_clients(creds, url, timeout_s=2)
    failure = try_launch.fn(clients, details(), "t")
    assert failure.kind == TRANSIENT and failure.status is None


def test_unclassifiable_errors_are_not_swallowed():
    with pytest.raises(KeyError):
        failure_from(KeyError("bug"))
