"""Exports load back with `datasets`, round-trip every field, and are written atomically."""

from __future__ import annotations

import json
import math

import pytest

import thinklens.analyses.judge.export as judge_export
from thinklens.analyses.judge.export import (
    assistant_content,
    export_selection,
    load_manifest,
    load_messages,
    read_export,
    records,
)
from thinklens.analyses.judge.select import score_pool, select
from thinklens.testing import tiny_model
from thinklens.traces import ThinkingFormat

datasets = pytest.importorskip("datasets", reason="the datasets extra is not installed")


@pytest.fixture(scope="module")
def m():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def selection(m, random_probe, tiny_pool):
    scored = score_pool(m, random_probe(m), tiny_pool(m, 12), k=3, progress=False)
    # A candidate without a cliff (selected: lowest final score) must survive the trip.
    scored.loc[scored["last_score"].idxmin(), "cliff"] = math.nan
    return select(scored, "proxy", top_k=6)


def _rows(ds) -> list[dict]:
    return [dict(r) for r in ds]


def test_records_follow_the_published_layout(m, selection):
    recs = records(selection, m.thinking)
    for rec, row in zip(recs, selection.table.itertuples(), strict=True):
        user, assistant = rec["messages"]
        assert user == dict(role="user", content=row.prompt)
        assert assistant["role"] == "assistant"
        assert assistant["content"] == f"<think>\n{row.thinking}\n</think>\n\n{row.safe_response}"
        assert rec["id"] == row.id and rec["rank"] == row.rank
    r1 = ThinkingFormat(template_opens_thinking=True)
    assert assistant_content(r1, "t", "No.") == "t\n</think>\n\nNo."


def test_every_format_loads_back_and_round_trips(m, selection, tmp_path):
    out = export_selection(selection, tmp_path / "sel", m.thinking, model_name=m.name)
    written = records(selection, m.thinking)
    assert any(r["cliff"] is None for r in written)
    cache = str(tmp_path / "cache")
    msgs = datasets.load_dataset(
        "json", data_files=str(out / "messages.jsonl"), split="train", cache_dir=cache
    )
    assert _rows(msgs) == written == load_messages(out)
    alp = datasets.load_dataset(
        "json", data_files=str(out / "alpaca.jsonl"), split="train", cache_dir=cache
    )
    for a, r in zip(_rows(alp), written, strict=True):
        assert a["instruction"] == r["messages"][0]["content"] and a["input"] == ""
        assert a["output"] == r["messages"][1]["content"]
        assert {k: v for k, v in a.items() if k not in ("instruction", "input", "output")} == {
            k: v for k, v in r.items() if k != "messages"
        }
    assert _rows(datasets.load_from_disk(str(out / "dataset"))) == written
    pq = datasets.load_dataset(
        "parquet", data_files=str(out / "train.parquet"), split="train", cache_dir=cache
    )
    assert _rows(pq) == written
    back = read_export(out, m.thinking)
    for col in ("id", "prompt", "thinking", "safe_response"):
        assert list(back[col]) == list(selection.table[col])


def test_manifest_counts_ranges_and_provenance(m, selection, tmp_path):
    out = export_selection(selection, tmp_path / "sel", m.thinking, model_name=m.name)
    man = load_manifest(out)
    assert man["counts"]["selected"] == 6 and man["counts"]["pool"] == 12
    assert man["counts"]["by_source"] == {"tiny": 6}
    assert man["counts"]["model_answer_refused"] == int(selection.table["refused"].sum())
    assert man["provenance"]["method"] == "proxy"
    assert man["provenance"]["probe"]["fingerprint"] == m.fingerprint()
    ranges = man["provenance"]["score_ranges"]["selected"]["last_score"]
    assert ranges["max"] == pytest.approx(selection.table["last_score"].max())
    assert man["thinking_format"]["close"] == "</think>"
    assert set(man["files"]) == {"messages.jsonl", "alpaca.jsonl", "dataset/", "train.parquet"}
    only = export_selection(selection, tmp_path / "one", m.thinking, formats=["messages"])
    assert sorted(p.name for p in only.iterdir()) == ["manifest.json", "messages.jsonl"]


def test_existing_output_is_refused_unless_overwrite(m, selection, tmp_path):
    out = export_selection(selection, tmp_path / "sel", m.thinking)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        export_selection(selection, out, m.thinking)
    smaller = select(selection.table.drop(columns="rank"), "random", top_k=2, seed=0)
    export_selection(smaller, out, m.thinking, overwrite=True)
    assert len(load_messages(out)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel"]  # no temporary folders left


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupted_export_leaves_no_partial_output(
    m, selection, tmp_path, monkeypatch, existing
):
    out = tmp_path / "sel"
    if existing:
        export_selection(selection, out, m.thinking, formats=["messages"])
    before = sorted(p.name for p in out.iterdir()) if existing else None

    def crash(folder, recs):
        (folder / "train.parquet").write_text("half a file")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the parquet was written

    monkeypatch.setattr(judge_export, "_write_datasets", crash)
    with pytest.raises(KeyboardInterrupt):
        export_selection(selection, out, m.thinking, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["sel"] if existing else [])
    if existing:  # the previous export is intact
        assert sorted(p.name for p in out.iterdir()) == before
        assert json.loads((out / "manifest.json").read_text())["files"] == ["messages.jsonl"]


def test_bad_export_requests(m, selection, tmp_path):
    with pytest.raises(ValueError, match="unknown export formats \\['csv'\\]"):
        export_selection(selection, tmp_path / "x", m.thinking, formats=["csv"])
    with pytest.raises(FileNotFoundError, match="no messages.jsonl"):
        load_messages(tmp_path)
    other = ThinkingFormat(open="<reasoning>", close="</reasoning>")
    out = export_selection(selection, tmp_path / "sel", m.thinking, formats=["messages"])
    with pytest.raises(ValueError, match="another thinking format"):
        read_export(out, other)
