"""The API reference builds from the docstrings with pdoc, and any pdoc warning fails it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pdoc")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_docs.py"


@pytest.fixture(scope="module")
def build_docs():
    spec = importlib.util.spec_from_file_location("build_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_module_is_listed(build_docs):
    mods = build_docs.public_modules()
    for name in ("thinklens.probes.cliff", "thinklens.interventions.heads.scores"):
        assert name in mods
    assert "thinklens.analyses.judge.select" in mods and "thinklens.model" in mods
    assert not [m for m in mods if any(part.startswith("_") for part in m.split("."))]


def test_reference_builds_without_warnings(build_docs, tmp_path):
    out = build_docs.build(tmp_path / "api")  # raises DocsWarning on any pdoc warning
    for page in ("index", "thinklens", "thinklens/probes", "thinklens/interventions"):
        assert (out / f"{page}.html").is_file(), page
    assert (out / "thinklens/analyses.html").is_file()
    assert (out / "thinklens/probes/cliff.html").is_file()
    top = (out / "thinklens.html").read_text()  # the index opens it; it links every child
    for child in ("probes", "interventions", "analyses", "model", "capture", "report"):
        assert f"thinklens/{child}.html" in top, child
    probe = (out / "thinklens/probes/probe.html").read_text()
    assert "RefusalProbe" in probe and "refusal intention" in probe


def test_a_pdoc_warning_is_an_error(build_docs, tmp_path, monkeypatch):
    (tmp_path / "doc_warns.py").write_text(
        '"""A module whose annotation names nothing."""\n\nvalue: "NoSuchType" = 1\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(build_docs.DocsWarning, match="NoSuchType"):
        build_docs.build(tmp_path / "api", ["doc_warns"])
    assert not (tmp_path / "api").exists()
