"""Apply the system to a Prefect server idempotently: store, rate limits, pools, blocks.

    python -m deployments.bootstrap [--local] all | blocks | migrate | limits | pools
        | automations | pool-names

--local makes every pool a process pool, so local workers serve them all (`make up`). Alerts
and resubmits are named automations (deployments/automations.py), applied after the blocks
since they notify through the investflow-alerts block; only the chaining and the GPU fallback
stay deployment triggers in prefect.yaml, which `prefect deploy --all` applies.
"""

from __future__ import annotations

import argparse

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound

from deployments.pools import CPU_IMAGE_VARIABLE, POOL_NAMES, POOLS, base_job_template
from tasks.settings import get_settings


def apply_pools(local: bool = False) -> None:
    """Create each pool, or bring an existing one's template and description up to date."""
    settings = get_settings()
    with get_client(sync_client=True) as client:
        for pool in POOLS:
            template = base_job_template(pool, settings, local=local)
            kind = "process" if local else pool.type
            description = f"{pool.description} Budget: {pool.budget}."
            try:
                existing = client.read_work_pool(pool.name)
            except ObjectNotFound:
                existing = None
            if existing is None:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=pool.name,
                        type=kind,
                        base_job_template=template,
                        description=description,
                    )
                )
                print(f"  work pool {pool.name} ({kind}): created")
            elif existing.type != kind:
                raise SystemExit(
                    f"work pool {pool.name} exists with type {existing.type}, not {kind}: "
                    f"delete it (prefect work-pool delete {pool.name}) to change its type"
                )
            elif (existing.base_job_template, existing.description) != (template, description):
                client.update_work_pool(
                    pool.name,
                    WorkPoolUpdate(base_job_template=template, description=description),
                )
                print(f"  work pool {pool.name} ({kind}): updated")
            else:
                print(f"  work pool {pool.name} ({kind}): unchanged")
    apply_cpu_image(settings.cpu_image)


def apply_cpu_image(image: str) -> None:
    """The CPU model image predict-returns-cpu names on the fargate pool (see prefect.yaml)."""
    from prefect.variables import Variable

    if Variable.get(CPU_IMAGE_VARIABLE) == image:
        print(f"  variable {CPU_IMAGE_VARIABLE}: unchanged")
        return
    Variable.set(CPU_IMAGE_VARIABLE, image, overwrite=True)
    print(f"  variable {CPU_IMAGE_VARIABLE}: {image}")


def migrate_store(local: bool = False) -> None:
    from blocks.database import database_url
    from tasks.store.engine import migrate

    migrate(database_url(get_settings()))
    print("  market store: at the newest migration")


def apply_limits(local: bool = False) -> None:
    from tasks.limits import RATE_LIMITS, ensure_rate_limits

    ensure_rate_limits(overwrite=True)
    print(f"  rate limits: {', '.join(RATE_LIMITS)}")


def apply_blocks(local: bool = False) -> None:
    from deployments.blocks import register_blocks

    for line in register_blocks(local=local):
        print(f"  {line}")


def apply_alerts(local: bool = False) -> None:
    from deployments.automations import apply_automations

    for line in apply_automations():
        print(f"  {line}")


def pool_names() -> list[str]:
    return list(POOL_NAMES)


# In order: blocks first, so the store is migrated where the current settings point.
STEPS = {
    "blocks": ("Blocks", apply_blocks),
    "migrate": ("Market store", migrate_store),
    "limits": ("Rate limits", apply_limits),
    "pools": ("Work pools", apply_pools),
    # After the blocks: the alerts go through the investflow-alerts block.
    "automations": ("Automations", apply_alerts),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.bootstrap")
    parser.add_argument("--local", action="store_true", help="every pool as a process pool")
    parser.add_argument(
        "step",
        choices=["all", *STEPS, "pool-names"],
    )
    args = parser.parse_args(argv)
    if args.step == "pool-names":
        print("\n".join(POOL_NAMES))
        return
    for name, (_, step) in STEPS.items():
        if args.step in ("all", name):
            step(local=args.local)


if __name__ == "__main__":
    main()
