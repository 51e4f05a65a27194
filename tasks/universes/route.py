"""Send a listing library's real hostnames to another address, as an /etc/hosts entry would.

FinanceDataReader calls module-level `requests.get/post` (and pandas) with its URLs written
in: there is no session or base URL to hand it. So a mirror or a local stand-in is reached the
way tasks/market/yahoo.py reaches one for yfinance (curl's --resolve): the names are resolved
to the configured address while the URLs, Host headers and TLS names stay the real ones, and
the mirror's own CA is trusted through REQUESTS_CA_BUNDLE (which requests reads per call).
Only the named hosts are rerouted, and only inside `routed(...)`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

_real_getaddrinfo = socket.getaddrinfo
_routes: dict[str, str] = {}
_lock = threading.Lock()


def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str | bytes):
        name = host.decode() if isinstance(host, bytes) else host
        host = _routes.get(name.lower().rstrip("."), host)
    return _real_getaddrinfo(host, *args, **kwargs)


def address_of(base_url: str) -> str:
    """The IP address base_url's host resolves to (the real resolver's answer)."""
    host = urlsplit(base_url).hostname
    if not host:
        raise ValueError(f"INVESTFLOW_LISTINGS_BASE_URL={base_url!r} names no host")
    return _real_getaddrinfo(host, None, socket.AF_INET)[0][4][0]


@contextlib.contextmanager
def routed(hosts: tuple[str, ...], base_url: str | None, ca_bundle: str | None) -> Iterator[None]:
    """Within the block, resolve hosts to base_url's address and trust ca_bundle (if given)."""
    if not base_url:
        yield
        return
    address = address_of(base_url)
    with _lock:
        socket.getaddrinfo = _getaddrinfo
        _routes.update({h: address for h in hosts})
        saved = os.environ.get("REQUESTS_CA_BUNDLE")
        if ca_bundle:
            os.environ["REQUESTS_CA_BUNDLE"] = ca_bundle
    try:
        yield
    finally:
        with _lock:
            for h in hosts:
                _routes.pop(h, None)
            if ca_bundle:
                if saved is None:
                    os.environ.pop("REQUESTS_CA_BUNDLE", None)
                else:
                    os.environ["REQUESTS_CA_BUNDLE"] = saved
            if not _routes:
                socket.getaddrinfo = _real_getaddrinfo
