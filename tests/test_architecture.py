"""The package's shape: import contracts, no cycles, no private names across modules, small
modules."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from lint_imports import lint, stage  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None,
    reason="import-linter is not installed (pip install -e '.[dev]')",
)


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    return stage(tmp_path_factory.mktemp("staged"))


def _modules(staged: Path) -> dict[str, Path]:
    out = {}
    for path in (staged / "thinklens").rglob("*.py"):
        parts = path.relative_to(staged).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_the_contracts_hold(staged):
    done = lint(staged)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_a_core_module_importing_a_study_breaks_the_layers(tmp_path):
    staged = stage(tmp_path)
    model = staged / "thinklens" / "model.py"
    model.write_text(model.read_text() + "\nfrom thinklens.analyses.echo import echo_gap\n")
    done = lint(staged)
    assert done.returncode == 1
    assert "BROKEN" in done.stdout and "thinklens.model -> thinklens.analyses.echo" in done.stdout


def test_one_study_importing_another_breaks_their_independence(tmp_path):
    staged = stage(tmp_path)
    gap = staged / "thinklens" / "analyses" / "echo" / "gap.py"
    gap.write_text(gap.read_text() + "\nfrom thinklens.analyses.judge import select\n")
    done = lint(staged)
    assert done.returncode == 1 and "studies of analyses are independent BROKEN" in done.stdout


def test_no_import_cycles(staged):
    """No two modules import each other, directly or through others (lazy imports count)."""
    import grimp

    sys.path.insert(0, str(staged))
    try:
        graph = grimp.build_graph("thinklens", cache_dir=None, exclude_type_checking_imports=True)
    finally:
        sys.path.remove(str(staged))
    modules = sorted(graph.modules)
    cycles = []
    for m in modules:
        for n in graph.find_modules_directly_imported_by(m):
            # A package's __init__ re-exports its children: that edge is not a cycle.
            if n.startswith(m + ".") or m.startswith(n + "."):
                continue
            if graph.chain_exists(importer=n, imported=m):
                cycles.append((m, n))
    assert not cycles, cycles


def test_no_private_names_imported_across_modules(staged):
    found = []
    for path in [*_modules(staged).values(), *(REPO / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("thinklens"):
                found += [(path.name, a.name) for a in node.names if a.name.startswith("_")]
    assert not found, found


def test_no_module_over_400_lines(staged):
    long = {n: len(p.read_text().splitlines()) for n, p in _modules(staged).items()}
    assert not {n: k for n, k in long.items() if k > 400}
