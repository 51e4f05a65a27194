"""The failure alert's text: what failed, where to look, and no secret."""

from flows.alerts import format_alert


def test_alert_names_the_run_links_to_it_and_masks_secrets():
    run = {
        "id": "0b7e6f7c-1111-2222-3333-444455556666",
        "name": "gentle-otter",
        "flow": "backup-postgres",
        "deployment": "backup-postgres",
        "state": "Failed",
        "message": "pg_dump: connection to postgresql://u:hunter22@db/market failed",
    }
    title, body = format_alert(run, "https://prefect.example.com/", ["hunter22"])
    assert title == "investflow: backup-postgres/backup-postgres Failed"
    assert "gentle-otter" in body
    assert "https://prefect.example.com/runs/flow-run/0b7e6f7c-1111-2222-3333-444455556666" in body
    assert "hunter22" not in body and "connection to postgresql://u:***@db" in body


def test_alert_for_a_run_without_deployment_or_message():
    run = {
        "id": "x",
        "name": "n",
        "flow": "macro",
        "deployment": None,
        "state": "Crashed",
        "message": "",
    }
    title, body = format_alert(run, "http://127.0.0.1:4200", [])
    assert title == "investflow: macro Crashed"
    assert "Message: (none)" in body
