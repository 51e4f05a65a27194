"""Alerts: delivered to the webhook, redacted, rate-limited, and never fatal to the job."""

from __future__ import annotations

import pytest
from prefect import flow
from pydantic import SecretStr

import tasks.clock
from tasks.alerts.notify import AlertLimiter, block_for_url, send_alert
from tasks.alerts.redact import redact
from tasks.settings import Settings
from tests.fakes.webhook import FakeWebhook

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


@flow
def alerting_run(alerts: list[dict], settings: Settings):
    """A flow run that sends alerts, as the A1 campaign's runs do: each run has its own budget."""
    for alert in alerts:
        send_alert(settings=settings, **alert)


def alert(title: str, message: str, settings: Settings, **extra) -> None:
    alerting_run([{"title": title, "message": message, **extra}], settings)


@pytest.fixture
def clock(monkeypatch):
    """Set the monotonic clock the alert limiter reads (tasks/clock.py: time's one place)."""
    now = {"t": 1000.0}
    monkeypatch.setattr(tasks.clock, "monotonic", lambda: now["t"])
    return now


@pytest.fixture
def webhook():
    with FakeWebhook() as server:
        yield server


def settings_for(url: str, **extra) -> Settings:
    return Settings(alert_webhook_url=SecretStr(url), http_timeout_s=5, **extra)


@pytest.mark.integration
def test_an_alert_reaches_a_plain_json_webhook(webhook):
    alert("Backup failed", "backup-postgres: disk full", settings_for(webhook.url))
    assert webhook.count() == 1
    body = webhook.messages[0]
    assert body["title"] == "Backup failed"
    assert "disk full" in body["content"] and "disk full" in body["text"]


@pytest.mark.integration
def test_secrets_and_keys_never_reach_the_channel(webhook):
    settings = settings_for(webhook.url, fred_api_key=SecretStr("fredsecret123456"))
    alert("Leak test", f"key {PEM} and fredsecret123456 and {webhook.url}", settings)
    raw = b"".join(webhook.raw_bodies).decode()
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in raw
    assert "fredsecret123456" not in raw and webhook.url not in raw
    assert "[redacted key]" in raw


@pytest.mark.integration
def test_repeated_alerts_are_coalesced_and_counted_in_the_next_one(webhook, clock):
    trying = {"title": "A1 launch still trying", "message": "capacity"}
    ready = {"title": "A1 instance ready", "message": "ocid1.instance", "urgent": True}

    @flow
    def campaign(settings: Settings):
        for _ in range(5):
            send_alert(settings=settings, **trying)
        send_alert(settings=settings, **ready)
        sent_before = webhook.count()
        clock["t"] += 301
        send_alert(settings=settings, **trying)
        return sent_before

    assert campaign(settings_for(webhook.url)) == 2  # the first progress alert, the urgent one
    assert webhook.count() == 3
    assert "4 similar alert(s) held back" in webhook.texts()[-1]
    # The next run (the next 10-minute A1 run) starts with a budget of its own.
    alerting_run([trying], settings_for(webhook.url))
    assert webhook.count() == 4


def test_the_limiter_caps_alerts_per_minute_across_keys(clock):
    limiter = AlertLimiter(interval_s=0, per_minute=3)
    assert [limiter.admit(f"k{i}")[0] for i in range(5)] == [True, True, True, False, False]
    assert limiter.admit("k9", urgent=True)[0]
    clock["t"] += 61
    assert limiter.admit("k3") == (True, 1)


@pytest.mark.integration
def test_a_webhook_outage_is_logged_and_the_run_goes_on(webhook, caplog):
    webhook.fail("/", 500, "boom", times=1)
    state = alerting_run(
        [{"title": "Down", "message": "x"}, {"title": "Up", "message": "y"}],
        settings_for(webhook.url),
        return_state=True,
    )
    assert state.is_completed()
    assert "Alert 'Down' was not delivered: RuntimeError: webhook answered HTTP 500" in caplog.text
    assert webhook.url not in caplog.text
    # The webhook saw both posts: the first answered 500, the second went through.
    assert webhook.texts() == ["**Down**\nx", "**Up**\ny"]


@pytest.mark.integration
def test_a_stalled_webhook_times_out(webhook, caplog):
    webhook.fail("/", 204, "", times=1, delay_s=3)
    settings = Settings(alert_webhook_url=SecretStr(webhook.url), http_timeout_s=0.5)
    alert("Slow", "x", settings)
    assert "Alert 'Slow' was not delivered: ReadTimeout" in caplog.text


@pytest.mark.integration
def test_without_a_channel_the_alert_is_only_logged(caplog):
    caplog.set_level("INFO", logger="tasks.alerts.notify")
    alert("Nowhere", "x", Settings(alert_webhook_url=None))
    assert "No alert channel configured" in caplog.text


def test_discord_and_slack_urls_become_their_notification_blocks():
    from prefect.blocks.notifications import DiscordWebhook, SlackWebhook

    discord = block_for_url("https://discord.com/api/webhooks/1234/tok-en_x")
    assert isinstance(discord, DiscordWebhook)
    assert discord.webhook_id.get_secret_value() == "1234"
    assert discord.webhook_token.get_secret_value() == "tok-en_x"
    slack = block_for_url("https://hooks.slack.com/services/T000/B000/XXXX")
    assert isinstance(slack, SlackWebhook)
    assert block_for_url("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"


@pytest.mark.integration
def test_the_investflow_alerts_block_wins_over_the_setting(webhook):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    with FakeWebhook() as unused:
        CustomWebhookNotificationBlock(
            name="investflow-alerts",
            url=webhook.url,
            json_data={"content": "{{subject}}\n{{body}}"},
        ).save("investflow-alerts", overwrite=True)
        try:
            alert("Via block", "hello", settings_for(unused.url))
        finally:
            CustomWebhookNotificationBlock.delete("investflow-alerts")
        assert unused.count() == 0
    assert webhook.texts() == ["Via block\nhello"]


def test_redact_removes_pem_blocks_even_when_truncated():
    assert "MIIE" not in redact("a " + PEM[:60], [])
    assert redact("token abcdef123 here", ["abcdef123"]) == "token *** here"
