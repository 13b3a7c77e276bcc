"""Check the import contracts of ``pyproject.toml`` with import-linter (``lint-imports``).

import-linter finds a package's modules by walking its folder, and thinklens installs three of
its subpackages from other folders (``probes/``, ``interventions/``, ``analyses/``, setuptools
``package-dir``). So the package is first laid out as installed, sources only, in a temporary
folder, and the contracts are checked there. Run: ``python scripts/lint_imports.py``; it exits
with lint-imports' status (1 when a contract is broken).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where each part of the installed package lives in the source tree.
PARTS = {"thinklens": "thinklens", "probes": "thinklens/probes"}
PARTS |= {"interventions": "thinklens/interventions", "analyses": "thinklens/analyses"}


def stage(dest: Path, root: Path = ROOT) -> Path:
    """Copy the package's Python sources into ``dest`` as they are installed; returns ``dest``."""
    for src, target in PARTS.items():
        shutil.copytree(
            root / src,
            dest / target,
            ignore=shutil.ignore_patterns("__pycache__", "resources"),
            dirs_exist_ok=True,
        )
    return dest


def lint(staged: Path, config: Path = ROOT / "pyproject.toml") -> subprocess.CompletedProcess:
    """Run lint-imports with ``config``'s contracts on sources staged by ``stage``."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(staged)}
    return subprocess.run(
        [str(exe), str(config), "--no-cache"], cwd=staged, env=env, capture_output=True, text=True
    )


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        done = lint(stage(Path(tmp)))
    print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
