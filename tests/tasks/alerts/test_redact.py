"""Secrets are masked wherever text leaves the process."""

from pydantic import SecretStr

from tasks.alerts.redact import known_secrets, redact
from tasks.settings import Settings


def test_database_password_webhook_and_keys_are_masked():
    settings = Settings(
        database_url=SecretStr("postgresql://app:pg-Pa55word@db.internal:5432/market"),
        alert_webhook_url=SecretStr("https://discord.com/api/webhooks/1/tok-en-123456"),
        fred_api_key=SecretStr("abcdef0123456789"),
    )
    text = (
        "connect to postgresql://app:pg-Pa55word@db.internal:5432/market failed; "
        "password pg-Pa55word rejected; GET /fred?api_key=abcdef0123456789&x=1; "
        "posted to https://discord.com/api/webhooks/1/tok-en-123456"
    )
    out = redact(text, known_secrets(settings))
    for secret in ("pg-Pa55word", "abcdef0123456789", "tok-en-123456"):
        assert secret not in out
    assert out.startswith("connect to ")  # what is not secret stays readable
    # The password of a URL secret is known on its own, wherever it turns up.
    assert "pg-Pa55word" in known_secrets(settings)


def test_secret_looking_parameters_and_pem_keys_are_masked_without_being_told():
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    out = redact(f"https://x/y?token=t0k3n&api_key=k3y and redis://:rpass@h:6379 {pem}")
    assert "t0k3n" not in out and "k3y" not in out and "rpass" not in out
    assert "MIIEvQ" not in out and "[redacted key]" in out
