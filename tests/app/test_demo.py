"""The demo: the whole story on the model organisms, an HTML report and a training-data export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from thinklens.app.cli import main
from thinklens.embedded import ADAPTERS

needs_organisms = pytest.mark.skipif(
    not all((ADAPTERS / k / "organism.json").exists() for k in ("aligned", "cliff")),
    reason="the organism adapters are not built (thinklens organisms build aligned|cliff)",
)


def test_demo_command_prints_the_summary_and_where_the_files_are(tmp_path, monkeypatch, capsys):
    import thinklens.app.demo as demo

    calls = {}

    def fake(out, **kw):
        calls.update(kw, out=out)
        summary = pd.DataFrame([dict(step="1 refusal probe and cliff", result="AUROC 0.9")])
        return demo.DemoResult(summary, {}, Path(out) / "report.html", Path(out) / "j", 12.0)

    monkeypatch.setattr(demo, "run_demo", fake)
    assert main(["demo", "--out", str(tmp_path), "--n-prompts", "4"]) == 0
    out = capsys.readouterr().out
    assert calls["out"] == str(tmp_path) and calls["n_prompts"] == 4
    assert "AUROC 0.9" in out and f"report: {tmp_path / 'report.html'}" in out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from thinklens.app.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"), n_prompts=4)


@pytest.mark.real
@needs_organisms
def test_demo_measures_every_step(demo_run):
    steps = list(demo_run.summary["step"])
    assert [s.split()[0] for s in steps] == ["0", "1", "2", "3", "4", "5"]
    assert set(demo_run.summary["model"]) == {"organism-cliff", "organism-aligned"}
    probe = demo_run.tables["probe"].iloc[0]
    assert probe["layer"] == 29 and 0 <= probe["val_auroc"] <= 1
    ablation = demo_run.tables["ablation"].set_index("condition")
    assert list(ablation.index) == ["none", "top heads", "random"]
    assert ablation["asr"].between(0, 1).all() and ablation.loc["none", "kl"] == pytest.approx(0)
    assert ablation.loc["top heads", "n_heads"] == ablation.loc["random", "n_heads"] == 8
    ab = demo_run.tables["abliteration"]
    assert ab["refusal_rate"].between(0, 1).all() and (ab["kl"] >= 0).all()
    assert len(demo_run.tables["heads"]) == 10


@pytest.mark.real
@needs_organisms
def test_report_is_self_contained_and_shows_no_harmful_answer(demo_run):
    html = demo_run.report.read_text()
    assert html.count("plotly.js v") == 1
    assert len(re.findall(r'class="plotly-graph-div"', html)) == 7
    assert "<script src=" not in html  # nothing to fetch when the page opens
    assert "Sure, here is" not in html  # complied answers are judged, never shown
    assert not [p for p in demo_run.report.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.real
@needs_organisms
def test_export_holds_the_selection_and_its_manifest(demo_run):
    manifest = json.loads((demo_run.export / "manifest.json").read_text())
    records = [json.loads(x) for x in (demo_run.export / "messages.jsonl").read_text().splitlines()]
    assert manifest["counts"]["selected"] == len(records) == len(demo_run.tables["selection"])
    assert manifest["provenance"]["method"] == "cliff"
    for r in records:
        answer = r["messages"][1]["content"]
        assert "</think>" in answer and "Sure, here is" not in answer
