"""Alerts: delivered to the webhook, redacted, rate-limited, and never fatal to the job."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tasks.alerts.notify import AlertLimiter, block_for_url, send_alert
from tasks.alerts.redact import redact
from tasks.settings import Settings
from tests.fakes.webhook import FakeWebhook

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def webhook():
    with FakeWebhook() as server:
        yield server


def settings_for(url: str, **extra) -> Settings:
    return Settings(alert_webhook_url=SecretStr(url), http_timeout_s=5, **extra)


@pytest.mark.integration
def test_an_alert_reaches_a_plain_json_webhook(webhook):
    send_alert(
        "Backup failed",
        "backup-postgres: disk full",
        settings=settings_for(webhook.url),
        limiter=AlertLimiter(),
    )
    assert webhook.count() == 1
    body = webhook.messages[0]
    assert body["title"] == "Backup failed"
    assert "disk full" in body["content"] and "disk full" in body["text"]


@pytest.mark.integration
def test_secrets_and_keys_never_reach_the_channel(webhook):
    settings = settings_for(webhook.url, fred_api_key=SecretStr("fredsecret123456"))
    send_alert(
        "Leak test",
        f"key {PEM} and fredsecret123456 and {webhook.url}",
        settings=settings,
        limiter=AlertLimiter(),
    )
    raw = b"".join(webhook.raw_bodies).decode()
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in raw
    assert "fredsecret123456" not in raw and webhook.url not in raw
    assert "[redacted key]" in raw


@pytest.mark.integration
def test_repeated_alerts_are_coalesced_and_counted_in_the_next_one(webhook):
    clock = Clock()
    limiter = AlertLimiter(interval_s=300, per_minute=10, clock=clock)
    settings = settings_for(webhook.url)
    for _ in range(5):
        send_alert("A1 launch still trying", "capacity", settings=settings, limiter=limiter)
    send_alert(
        "A1 instance ready", "ocid1.instance", settings=settings, limiter=limiter, urgent=True
    )
    assert webhook.count() == 2  # the first progress alert and the urgent one
    clock.now = 301
    send_alert("A1 launch still trying", "capacity", settings=settings, limiter=limiter)
    assert webhook.count() == 3
    assert "4 similar alert(s) held back" in webhook.texts()[-1]


def test_the_limiter_caps_alerts_per_minute_across_keys():
    clock = Clock()
    limiter = AlertLimiter(interval_s=0, per_minute=3, clock=clock)
    assert [limiter.admit(f"k{i}")[0] for i in range(5)] == [True, True, True, False, False]
    assert limiter.admit("k9", urgent=True)[0]
    clock.now = 61
    assert limiter.admit("k3") == (True, 1)


@pytest.mark.integration
def test_a_webhook_outage_is_logged_not_raised_unless_asked(webhook, caplog):
    webhook.fail("/", 500, "boom", times=2)
    send_alert("Down", "x", settings=settings_for(webhook.url), limiter=AlertLimiter())
    assert "was not delivered" in caplog.text and webhook.url not in caplog.text
    with pytest.raises(RuntimeError, match="HTTP 500"):
        send_alert(
            "Down",
            "x",
            settings=settings_for(webhook.url),
            limiter=AlertLimiter(),
            raise_on_failure=True,
        )


@pytest.mark.integration
def test_a_stalled_webhook_times_out(webhook):
    webhook.fail("/", 204, "", times=1, delay_s=3)
    settings = Settings(alert_webhook_url=SecretStr(webhook.url), http_timeout_s=0.5)
    with pytest.raises(RuntimeError, match="Timeout"):
        send_alert("Slow", "x", settings=settings, limiter=AlertLimiter(), raise_on_failure=True)


@pytest.mark.integration
def test_without_a_channel_the_alert_is_only_logged(caplog):
    caplog.set_level("INFO", logger="tasks.alerts.notify")
    send_alert("Nowhere", "x", settings=Settings(alert_webhook_url=None), limiter=AlertLimiter())
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
            send_alert(
                "Via block",
                "hello",
                settings=settings_for(unused.url),
                limiter=AlertLimiter(),
                raise_on_failure=True,
            )
        finally:
            CustomWebhookNotificationBlock.delete("investflow-alerts")
        assert unused.count() == 0
    assert webhook.texts() == ["Via block\nhello"]


def test_redact_removes_pem_blocks_even_when_truncated():
    assert "MIIE" not in redact("a " + PEM[:60], [])
    assert redact("token abcdef123 here", ["abcdef123"]) == "token *** here"
