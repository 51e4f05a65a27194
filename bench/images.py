"""Benchmark: installed size of each image's and node's dependencies, before and after the split.

Before, every image installed one dependency list (the CPU image `pip install '.[model]'`,
the GPU image the same with CUDA torch, each Oracle node `pip install .`, without torch).
After, each route installs its lock in requirements/. Each set is installed into a fresh venv
under a temporary folder (pip's cache saves the downloads) and measured as what it adds to
site-packages (apparent bytes, the bare venv's pip subtracted), with its largest packages.

"Before" is installed under requirements/dev.txt's pins, as the union of every route's
pyproject requirements, so the figures compare the split alone, not version drift. The GPU
image's CUDA torch is not built here (several GB); its figure is the CPU-torch equivalent,
the model lock as the CPU image installs it. The project itself (a few hundred KB) is left
out of every set. Writes bench/results/images.json.

    .venv/bin/python bench/images.py [--only ingestion,model]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "images.json"
LOCKS = ROOT / "requirements"
MB = 1_000_000

# Run by each venv's interpreter: bytes per installed distribution (its RECORD), and the
# whole of site-packages.
MEASURE = r"""
import json, os, sys, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["purelib"]
total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(site) for f in fs
            if not os.path.islink(os.path.join(d, f)))
sizes = {}
for dist in metadata.distributions(path=[site]):
    paths = [dist.locate_file(f) for f in dist.files or []]
    sizes[dist.metadata["Name"]] = sum(p.stat().st_size for p in paths if p.is_file())
print(json.dumps({"site_packages": total, "distributions": sizes}))
"""


def runtime_requirements(drop: tuple[str, ...] = ()) -> list[str]:
    """pyproject's core and every extra but dev: the one list every image used to install."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + [r for k, v in extras.items() if k != "dev" for r in v]
    return sorted({r for r in wanted if Requirement(r).name not in drop})


# name: (what runs it, how it is installed: a lock file or requirement strings under dev.txt)
SETS = {
    "before-image": (
        "before: the one image of every route (cpu; the gpu one with CUDA torch instead)",
        runtime_requirements(),
    ),
    "before-node": (
        "before: each Oracle node's and the AWS node's venv (pip install ., no torch)",
        runtime_requirements(drop=("torch",)),
    ),
    "ingestion": ("fargate: us-prices, kr-prices, macro (image investflow-ingestion)", "ingestion"),
    "model": (
        "fargate: predict-returns-cpu (image investflow-cpu); gpu-desktop: train-model, "
        "predict-returns (image investflow-gpu, CUDA torch: CPU-torch equivalent here)",
        "model",
    ),
    "backups": ("oracle-osaka venv: backup-postgres, backup-redis, verify-backups", "backups"),
    "oci": ("oracle-chuncheon venv: launch-a1-instance", "oci"),
    "core": ("oracle-mumbai venv: health-page", "core"),
    "workers": ("desktop host venv: the docker worker", "workers"),
    "deploy": ("AWS node venv: server, ECS worker, bootstrap, prefect deploy --all", "deploy"),
}


def run(args: list[str], **kwargs) -> str:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])} ... failed:\n{done.stdout[-2000:]}{done.stderr}")
    return done.stdout


def measure(python: Path) -> dict:
    return json.loads(run([str(python), "-I", "-c", MEASURE]))


def install_set(how: str | list[str], root: Path, bare: dict) -> dict:
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    started = time.perf_counter()
    if isinstance(how, str):
        run([*pip, "--no-deps", "-r", str(LOCKS / f"{how}.txt")])
    else:
        run([*pip, "-c", str(LOCKS / "dev.txt"), *how])
    took = time.perf_counter() - started
    found = measure(venv / "bin" / "python")
    added = {n: s for n, s in found["distributions"].items() if n not in bare["distributions"]}
    largest = sorted(added.items(), key=lambda item: -item[1])[:6]
    return {
        "installed_mb": round((found["site_packages"] - bare["site_packages"]) / MB, 1),
        "packages": len(added),
        "largest_mb": {name: round(size / MB, 1) for name, size in largest},
        "has": {p: p in {n.lower() for n in added} for p in ("torch", "oci", "matplotlib")},
        "install_s": round(took, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated sets to measure again (others kept)")
    args = parser.parse_args()
    names = [n for n in SETS if not args.only or n in args.only.split(",")]
    kept = json.loads(RESULTS.read_text())["sets"] if args.only and RESULTS.exists() else {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="investflow-images-") as tmp:
        root = Path(tmp)
        run([sys.executable, "-m", "venv", str(root / "bare")])
        bare = measure(root / "bare" / "bin" / "python")
        for name in names:
            runs_on, how = SETS[name]
            print(f"{name}: installing", flush=True)
            results[name] = {"runs": runs_on, **install_set(how, root, bare)}
            results[name]["load_average"] = [round(x, 1) for x in os.getloadavg()]
            print(f"  {results[name]['installed_mb']} MB, {results[name]['packages']} packages")
    results = {n: results.get(n) or kept[n] for n in SETS if n in results or n in kept}
    before = results.get("before-image")
    if before:
        for name in ("ingestion", "model"):
            if name in results:
                results[name]["of_before_image"] = round(
                    results[name]["installed_mb"] / before["installed_mb"], 2
                )
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "measured_at": time.strftime("%Y-%m-%d"),
        "sets": results,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
