"""The listing hosts resolve to the configured address inside routed() only."""

from __future__ import annotations

import os
import socket

from tasks.universes.route import routed


def test_only_the_named_hosts_are_rerouted_and_only_inside_the_block():
    before = socket.getaddrinfo
    with routed(("data.krx.co.kr",), "https://127.0.0.9", "/tmp/ca.pem"):
        found = socket.getaddrinfo("data.krx.co.kr", 443, socket.AF_INET, socket.SOCK_STREAM)
        assert {a[4] for a in found} == {("127.0.0.9", 443)}
        assert socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4][0] == "127.0.0.1"
        assert os.environ["REQUESTS_CA_BUNDLE"] == "/tmp/ca.pem"
    assert socket.getaddrinfo is before
    assert (
        "REQUESTS_CA_BUNDLE" not in os.environ or os.environ["REQUESTS_CA_BUNDLE"] != "/tmp/ca.pem"
    )


def test_no_base_url_changes_nothing():
    before = socket.getaddrinfo
    with routed(("data.krx.co.kr",), None, None):
        assert socket.getaddrinfo is before
