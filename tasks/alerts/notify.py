"""Alerts to the team's channel (Discord, Slack or any JSON webhook): redacted and rate-limited."""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

import httpx

from blocks.names import ALERTS
from tasks import clock
from tasks.alerts.redact import known_secrets, redact
from tasks.logs import run_logger
from tasks.settings import Settings, get_settings

MAX_CHARS = 1900  # Discord rejects message content over 2000 characters


class AlertLimiter:
    """Let one alert per key through every `interval_s` and at most `per_minute` overall.

    Held-back alerts are counted, and the next alert of that key says how many were folded in,
    so a week-long run reports its state without flooding the channel.
    """

    def __init__(self, interval_s: float = 300.0, per_minute: int = 10) -> None:
        self.interval_s = interval_s
        self.per_minute = per_minute
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._recent: list[float] = []
        self._lock = threading.Lock()

    def admit(self, key: str, urgent: bool = False) -> tuple[bool, int]:
        """Return (send now?, how many alerts of this key were held back before it)."""
        now = clock.monotonic()
        with self._lock:
            self._recent = [t for t in self._recent if now - t < 60.0]
            too_soon = now - self._last.get(key, float("-inf")) < self.interval_s
            if not urgent and (too_soon or len(self._recent) >= self.per_minute):
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            self._recent.append(now)
            return True, self._held.pop(key, 0)


# One budget per flow run (a week-long A1 campaign is many short runs, each coalescing its own
# alerts); calls outside any run share one.
_LIMITERS: dict[str | None, AlertLimiter] = {}


def limiter_of_this_run() -> AlertLimiter:
    from prefect.runtime import flow_run

    return _LIMITERS.setdefault(flow_run.get_id(), AlertLimiter())


def send_alert(
    title: str,
    message: str,
    *,
    settings: Settings | None = None,
    key: str | None = None,
    urgent: bool = False,
) -> None:
    """Post an alert through the "investflow-alerts" block, else INVESTFLOW_ALERT_WEBHOOK_URL.

    Alerts with the same key (default: the title) are coalesced within a run; urgent ones
    always go out. Delivery problems are logged, never raised: an alert must not take the job
    down with it.
    """
    log = run_logger(__name__)
    send, held = limiter_of_this_run().admit(key or title, urgent)
    if not send:
        log.info("Alert %r held back by the rate limiter", title)
        return
    if held:
        message = f"{message}\n({held} similar alert(s) held back since the last one)"
    settings = settings or get_settings()
    secrets = known_secrets(settings)
    title, message = redact(title, secrets), redact(message, secrets)[:MAX_CHARS]
    try:
        _deliver(title, message, settings)
    except Exception as exc:  # noqa: BLE001 - an alert must never take the job down with it
        reason = redact(f"{type(exc).__name__}: {exc}", secrets)
        log.warning("Alert %r was not delivered: %s", title, reason)


def _deliver(title: str, message: str, settings: Settings) -> None:
    block = _load_block()
    if block is None and settings.alert_webhook_url is not None:
        block = block_for_url(settings.alert_webhook_url.get_secret_value())
    if block is None:
        run_logger(__name__).info(
            "No alert channel configured; alert %r only logged: %s", title, message
        )
        return
    if isinstance(block, str):
        post_json(block, title, message, settings.http_timeout_s)
        return
    # Apprise's own socket timeouts (4 s connect, 4 s read) bound this call.
    with block.raise_on_failure():
        block.notify(message, subject=title)


def _load_block():
    """The saved notification block named ALERTS, or None when there is none."""
    from prefect.blocks.notifications import (
        CustomWebhookNotificationBlock,
        DiscordWebhook,
        SlackWebhook,
    )

    # A custom webhook block serves any other JSON endpoint (and the local stand-in).
    for block_type in (DiscordWebhook, SlackWebhook, CustomWebhookNotificationBlock):
        try:
            return block_type.load(ALERTS)
        except ValueError:  # no block of this type with that name
            continue
    return None


def block_for_url(url: str):
    """A Discord or Slack notification block for their webhook URLs; other URLs stay plain."""
    from prefect.blocks.notifications import DiscordWebhook, SlackWebhook

    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.endswith(("discord.com", "discordapp.com")):
        match = re.search(r"/api/webhooks/([^/]+)/([^/?]+)", parts.path)
        if not match:
            raise ValueError("INVESTFLOW_ALERT_WEBHOOK_URL is not a Discord webhook URL")
        return DiscordWebhook(webhook_id=match.group(1), webhook_token=match.group(2))
    if host == "hooks.slack.com":
        return SlackWebhook(url=url)
    return url


def post_json(url: str, title: str, message: str, timeout_s: float) -> None:
    """POST a Discord- and Slack-shaped JSON body ("content" and "text") to any webhook."""
    text = f"**{title}**\n{message}"
    body = {"content": text[:MAX_CHARS], "text": text, "title": title, "message": message}
    response = httpx.post(url, json=body, timeout=timeout_s)
    if response.status_code >= 300:
        # never echo the URL: for Discord and Slack it is the credential
        raise RuntimeError(f"webhook answered HTTP {response.status_code}")
