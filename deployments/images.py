"""Which deployments each image runs, and the check every image build ends with.

    python -m deployments.images check ingestion|cpu|gpu

loads each of that image's flows from its prefect.yaml entrypoint, as a worker would at run
time, so an image whose lock lacks a package or whose entrypoint names nothing fails to build
instead of failing its first scheduled run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

IMAGES = ("ingestion", "cpu", "gpu")
# prefect.yaml names the CPU image through this Variable (see deployments/pools.py).
_CPU_IMAGE_REF = "investflow_cpu_image"


def image_of(entry: dict) -> str | None:
    """The image a prefect.yaml deployment runs in; None for the process pools (no image)."""
    pool = entry["work_pool"]
    if pool["name"] == "gpu-desktop":
        return "gpu"
    if pool["name"] != "fargate":
        return None
    named = pool.get("job_variables", {}).get("image", "")
    return "cpu" if _CPU_IMAGE_REF in named else "ingestion"


def entrypoints(image: str, code_dir: Path) -> dict[str, str]:
    """Deployment name -> entrypoint, for every deployment that runs in image."""
    spec = yaml.safe_load((code_dir / "prefect.yaml").read_text())
    return {d["name"]: d["entrypoint"] for d in spec["deployments"] if image_of(d) == image}


def check(image: str, code_dir: Path) -> list[str]:
    """Load every flow the image runs from code_dir (where its runs start, as the deployments'
    pull step sets it); one line per flow, SystemExit naming the first that fails."""
    from prefect.flows import load_flow_from_entrypoint

    lines = []
    for name, entrypoint in sorted(entrypoints(image, code_dir).items()):
        try:
            flow = load_flow_from_entrypoint(str(code_dir / entrypoint))
        except Exception as exc:
            raise SystemExit(f"{image} image: deployment {name} ({entrypoint}): {exc!r}") from exc
        lines.append(f"{name}: {entrypoint} -> flow {flow.name!r}")
    if not lines:
        raise SystemExit(f"{image} image: prefect.yaml has no deployment that runs in it")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check"])
    parser.add_argument("image", choices=IMAGES)
    parser.add_argument("--code-dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    for line in check(args.image, args.code_dir.resolve()):
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
