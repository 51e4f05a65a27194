"""The layers hold: blocks/ imports neither tasks/ nor flows/, tasks/ never imports flows/,
and the store (tasks/store) knows nothing of its users (no other tasks/ package).

Blocks are configuration that every layer loads; tasks are what flows compose; the store is
what the per-system packages (market, macro, backups, ...) write through. An import against
that direction, at the top of a module or inside a function, fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> the top-level packages its modules must not import
FORBIDDEN = {"blocks": {"tasks", "flows"}, "tasks": {"flows"}}
SCANNED = ("blocks", "tasks", "flows")
# The store may use tasks/ modules every layer shares (settings, limits, ...), never a package.
STORE = ("tasks", "store")


def forbidden(root: Path, module: list[str], name: str) -> bool:
    parts = name.split(".")
    if parts[0] in FORBIDDEN.get(module[0], ()):
        return True
    if tuple(module[:2]) == STORE and parts[0] == "tasks" and len(parts) > 1:
        return parts[1] != "store" and (root / "tasks" / parts[1]).is_dir()
    return False


def imported_names(tree: ast.AST, module: list[str]) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import in the tree, wherever it sits; relative ones resolved.

    module is the importing module's dotted path as parts, "__init__" included for a package.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = module[: len(module) - node.level] if node.level else []
            base += node.module.split(".") if node.module else []
            for alias in node.names:  # `from . import tasks` imports the name as a module
                yield node.lineno, ".".join([*base, alias.name])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    yield node.lineno, arg.value


def violations(root: Path) -> tuple[list[str], int]:
    """Each forbidden import under root ("path:line imports name"), and how many files were read."""
    found, scanned = [], 0
    for package in SCANNED:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            module = [*rel.parent.parts, rel.stem]
            tree = ast.parse(path.read_text(), filename=str(path))
            scanned += 1
            for line, name in imported_names(tree, module):
                if forbidden(root, module, name):
                    found.append(f"{rel}:{line} imports {name}")
    return found, scanned


def test_blocks_and_tasks_import_nothing_above_them():
    found, scanned = violations(ROOT)
    assert scanned >= 20  # the real tree was read, not an empty folder
    assert found == []


def test_the_check_catches_every_form_of_import(tmp_path):
    bad = {
        "blocks/plain.py": "import tasks.alerts.notify\n",
        "blocks/from_package.py": "from tasks import notify\n",
        "blocks/from_module.py": "from flows.prices import ingest_us_prices\n",
        "blocks/in_function.py": "def build():\n    from tasks.alerts import notify\n",
        "blocks/relative.py": "from ..tasks import notify\n",
        "blocks/sub/dynamic.py": "import importlib\nimportlib.import_module('flows.macro')\n",
        "tasks/to_flows.py": "class A:\n    def run(self):\n        import flows\n",
        "tasks/sub/relative.py": "from ...flows.macro import ingest_macro\n",
        "tasks/store/uses_market.py": "from tasks.market.quality import Issue\n",
        "tasks/store/relative_market.py": "from ..market import quality\n",
        "tasks/store/sub/package.py": "def f():\n    import tasks.macro\n",
    }
    allowed = {
        "blocks/__init__.py": "",
        "blocks/ok.py": "import prefect\nfrom blocks.oci import OciCredentials\nimport tasksets\n",
        "tasks/ok.py": "from blocks.database import database_url\nfrom . import settings\n",
        "flows/ok.py": "from tasks import notify\nimport flows.macro\n",
        "tasks/store/ok.py": "from tasks.settings import get_settings\nfrom . import schema\n",
        "tasks/market/__init__.py": "",
        "tasks/macro/__init__.py": "",
        "tasks/market/ok.py": "from tasks.store.ledger import Issue\n",
    }
    for rel, text in {**bad, **allowed}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    found, scanned = violations(tmp_path)

    assert scanned == len(bad) + len(allowed)
    assert sorted(v.split(":")[0] for v in found) == sorted(bad)
