"""Every parameter a deployment's form shows is documented for operators, and nothing else is.

The form (UI: Edit, Custom run) is the flow's parameter schema; the documentation is the table
"Deployment parameters" in flows/README.md. A parameter added to a flow without a line there,
a line left behind for a parameter that is gone, or a default written there as a literal that
is not the real one (the value prefect.yaml fixes, else the flow's) fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "flows" / "README.md"
HEADING = "## Deployment parameters"
REQUIRED = "required"


def documented(text: str) -> dict[tuple[str, str], str]:
    """(deployment, parameter) -> the default cell, for every row of the section's table."""
    if HEADING not in text:
        raise AssertionError(f"flows/README.md has no section {HEADING!r}")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue  # the header, its rule, and the prose around the table
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names, parameters, default = cells[0], cells[1], cells[2]
        for deployment in re.findall(r"`([^`]+)`", names):
            for parameter in re.findall(r"`([^`]+)`", parameters):
                key = (deployment, parameter)
                if key in rows:
                    raise AssertionError(f"{deployment}: {parameter} is documented twice")
                rows[key] = default
    return rows


def deployed() -> dict[tuple[str, str], object]:
    """(deployment, parameter) -> the default a run gets, for every parameter each form shows."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    flows: dict[str, object] = {}
    found: dict[tuple[str, str], object] = {}
    for deployment in config["deployments"]:
        entrypoint = deployment["entrypoint"]
        if entrypoint not in flows:
            flows[entrypoint] = load_flow_from_entrypoint(str(ROOT / entrypoint))
        schema = flows[entrypoint].parameters
        fixed = deployment.get("parameters") or {}
        for name, prop in schema.properties.items():
            if name in fixed:
                default = fixed[name]
            elif name in (schema.required or []):
                default = REQUIRED
            else:
                default = prop.get("default")
            found[(deployment["name"], name)] = default
    return found


def problems(doc: dict[tuple[str, str], str], real: dict[tuple[str, str], object]) -> list[str]:
    """What the table gets wrong: parameters missing from it, named in it but not on a form,
    and literal defaults that are not the real ones (a default in prose is not checked)."""
    found = [f"{d}: {p} is on the form but not in the table" for d, p in sorted(real.keys() - doc)]
    found += [f"{d}: {p} is in the table but not on the form" for d, p in sorted(doc.keys() - real)]
    for key in sorted(doc.keys() & real.keys()):
        cell, value = doc[key], real[key]
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if cell == REQUIRED or literal:
            written = REQUIRED if cell == REQUIRED else json.loads(literal.group(1))
            if written != value:
                found.append(f"{key[0]}: {key[1]} defaults to {value!r}, not {cell}")
    return found


@pytest.fixture(scope="module")
def real() -> dict[tuple[str, str], object]:
    return deployed()


def test_every_parameter_on_a_deployment_form_is_documented_and_only_those(real):
    doc = documented(README.read_text())
    assert len(real) > 50  # every entrypoint was read, not an empty schema
    assert problems(doc, real) == []


def test_the_check_catches_a_missing_row_an_unknown_one_and_a_wrong_default(real):
    text = README.read_text()
    row = next(
        ln for ln in text.splitlines() if ln.startswith("| `us-prices`, `kr-prices` | `as_of`")
    )
    broken = text.replace(row + "\n", "")
    broken = broken.replace(
        "| `macro` | `vintages` | `false` |", "| `macro` | `vintages` | `true` |"
    ).replace(
        "| `macro` | `start` |",
        "| `macro` | `since` | `null` | not a parameter |\n| `macro` | `start` |",
    )

    found = problems(documented(broken), real)

    assert sorted(found) == [
        "kr-prices: as_of is on the form but not in the table",
        "macro: since is in the table but not on the form",
        "macro: vintages defaults to False, not `true`",
        "us-prices: as_of is on the form but not in the table",
    ]
