"""Wait until the Prefect API answers for this worker, saying clearly in the journal why not.

Run by each worker unit before the worker starts (ExecStartPre), with the unit's environment:
PREFECT_API_URL and PREFECT_API_AUTH_STRING (self-hosted) or PREFECT_API_KEY (Prefect Cloud).
Standard library only: it must cost a few MB, not the ~130 MB of importing Prefect.

    python wait_for_server.py --pool gpu-desktop [--interval 30] [--timeout 0]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REMIND_EVERY_S = 600.0  # a sleeping desktop should not fill the journal


def log(message: str) -> None:
    # systemd puts stderr in the journal; the prefix makes `journalctl -u ... | grep` easy.
    print(f"investflow-worker: {message}", file=sys.stderr, flush=True)


def auth_headers(env: dict[str, str]) -> dict[str, str]:
    """The same Authorization header the Prefect client sends (the auth string wins)."""
    auth = env.get("PREFECT_API_AUTH_STRING", "")
    key = env.get("PREFECT_API_KEY", "")
    if auth:
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    if key:
        return {"Authorization": f"Bearer {key}"}
    return {}


def probe(api_url: str, pool: str, env: dict[str, str], timeout: float = 10.0) -> str | None:
    """None when the API accepts us and the pool exists; otherwise why not, in one line."""
    url = f"{api_url.rstrip('/')}/work_pools/{urllib.parse.quote(pool)}"
    request = urllib.request.Request(url, headers=auth_headers(env))
    context = ssl.create_default_context(cafile=env.get("PREFECT_API_SSL_CERT_FILE") or None)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            json.load(resp)
        return None
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return (
                f"the server at {api_url} refused our credentials (401): check "
                "PREFECT_API_AUTH_STRING (or PREFECT_API_KEY for Prefect Cloud) in the "
                "worker's environment file"
            )
        if exc.code == 404:
            return (
                f"the server at {api_url} has no work pool {pool!r}: create it with "
                "`python -m deployments.bootstrap pools`"
            )
        return f"the server at {api_url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"cannot reach the Prefect server at {api_url}: {reason}"


def wait(
    pool: str,
    env: dict[str, str],
    interval: float = 30.0,
    timeout: float = 0.0,
    sleep=time.sleep,
    clock=time.monotonic,
) -> bool:
    """Probe until the server answers (True) or timeout seconds pass (False; 0 = for ever)."""
    api_url = env.get("PREFECT_API_URL", "")
    if not api_url:
        log("PREFECT_API_URL is not set in the worker's environment file; cannot start")
        return False
    started, last_logged, last_problem = clock(), float("-inf"), None
    while True:
        problem = probe(api_url, pool, env)
        if problem is None:
            waited = clock() - started
            suffix = f" after {waited:.0f} s" if last_problem else ""
            log(f"Prefect server at {api_url} is reachable{suffix}; starting the {pool} worker")
            return True
        now = clock()
        if problem != last_problem or now - last_logged >= REMIND_EVERY_S:
            log(f"{problem}; retrying every {interval:.0f} s (the worker starts when it answers)")
            last_logged, last_problem = now, problem
        if timeout and now - started >= timeout:
            log(f"giving up after {timeout:.0f} s")
            return False
        sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds; 0 waits for ever")
    args = parser.parse_args(argv)
    return 0 if wait(args.pool, dict(os.environ), args.interval, args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
