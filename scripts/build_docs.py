"""Build the API reference of thinklens from its docstrings with pdoc, warnings as errors.

Every public module of ``thinklens`` and of its subpackages ``thinklens.probes``,
``thinklens.interventions`` and ``thinklens.analyses`` gets a page (pdoc alone would follow
``__all__`` and skip the modules it does not name). Run:
``python -P scripts/build_docs.py --out thinklens-out/api`` and open ``index.html``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import warnings
from pathlib import Path

#: The package and its subpackages installed from other folders (``package-dir``).
PACKAGES = ("thinklens", "thinklens.probes", "thinklens.interventions", "thinklens.analyses")


def public_modules(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every module under ``packages`` whose dotted name has no part starting with ``_``."""
    names = set(packages)
    for package in packages:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.add(info.name)
    return sorted(names)


class DocsWarning(RuntimeError):
    """pdoc warned while building the reference (each warning is one line of the message)."""


def build(out: str | Path, modules: list[str] | None = None) -> Path:
    """Write the HTML reference of ``modules`` (default: every public one) into ``out``.

    Any warning pdoc gives (a name it cannot resolve, a module that fails to import) is an
    error, so the reference builds clean or not at all. pdoc catches some exceptions on its
    own, so the warnings are recorded and raised at the end as a ``DocsWarning`` rather than
    turned into exceptions where they occur. Returns the folder.
    """
    import pdoc.doc
    import pdoc.render

    out = Path(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Deprecations inside the libraries thinklens imports are theirs, not the reference's.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        pdoc.render.configure(docformat="google", footer_text="thinklens API reference")
        # The modules are listed here, not walked by pdoc: its walk follows ``__all__`` and
        # would skip (and leave out of the navigation) every module a package does not
        # re-export by name.
        docs = {name: pdoc.doc.Module.from_name(name) for name in modules or public_modules()}
        for name, doc in docs.items():  # each page links every child module, listed or not
            doc.submodules = [d for n, d in docs.items() if n.rpartition(".")[0] == name]
        pages = {name: pdoc.render.html_module(m, docs) for name, m in docs.items()}
        index = pdoc.render.html_index(docs)
        search = pdoc.render.search_index(docs)
    if caught:
        lines = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        raise DocsWarning("the API reference has warnings:\n" + "\n".join(lines))
    for name, page in pages.items():
        path = out / f"{name.replace('.', '/')}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    (out / "index.html").write_text(index, encoding="utf-8")
    (out / "search.js").write_text(search, encoding="utf-8")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="thinklens-out/api", help="output folder")
    args = p.parse_args()
    out = build(args.out)
    print(f"API reference: {(out / 'index.html').resolve()}")


if __name__ == "__main__":
    main()
