"""Tests for thinklens.data: bundled prompt sets, file loaders and their errors."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from thinklens.data import (
    KNOWN_PROMPT_COLUMNS,
    bundled_categories,
    bundled_prompts,
    load_prompts,
    load_records,
)

# --------------------------------------------------------------------------- bundled sets


@pytest.mark.parametrize("kind", ["harmful", "harmless"])
def test_bundled_sets_are_large_unique_and_split(kind: str) -> None:
    everything = bundled_prompts(kind)
    train = bundled_prompts(kind, "train")
    test = bundled_prompts(kind, "test")
    assert len(everything) >= 150
    assert len(set(everything)) == len(everything), "duplicate prompts"
    assert all(p == p.strip() and p for p in everything)
    assert train and test
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(everything)
    assert 0.2 <= len(test) / len(everything) <= 0.3


@pytest.mark.parametrize("kind", ["harmful", "harmless"])
def test_bundled_splits_balanced_per_category(kind: str) -> None:
    for category in bundled_categories(kind):
        train = bundled_prompts(kind, "train", category)
        test = bundled_prompts(kind, "test", category)
        assert train and test, category
        assert 0.2 <= len(test) / (len(train) + len(test)) <= 0.3, category


def test_bundled_harmful_has_many_categories() -> None:
    categories = bundled_categories("harmful")
    assert len(categories) >= 8
    for category in categories:
        assert bundled_prompts("harmful", category=category)


def test_bundled_sets_do_not_overlap() -> None:
    assert not set(bundled_prompts("harmful")) & set(bundled_prompts("harmless"))


def test_bundled_prompts_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown bundled prompt set"):
        bundled_prompts("benign")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown split"):
        bundled_prompts("harmful", "validation")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown category.*cybercrime"):
        bundled_prompts("harmful", category="nope")


def test_load_prompts_bundled_sources() -> None:
    assert load_prompts("bundled:harmful") == bundled_prompts("harmful", "train")
    assert load_prompts("bundled:harmless", split="test") == bundled_prompts("harmless", "test")
    assert load_prompts("bundled:harmful", split="all", limit=5) == bundled_prompts("harmful")[:5]
    with pytest.raises(ValueError, match="bundled:harmless"):
        load_prompts("bundled:benign")
    records = load_records("bundled:harmful", columns={"prompt": "text", "category": "cat"})
    assert set(records[0]) == {"text", "cat"}


# --------------------------------------------------------------------------- local files


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_load_prompts_csv_auto_column_strips_and_drops_empty(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "p.csv",
        ["id", "goal", "target"],
        [["1", "  first, with comma  ", "t1"], ["2", "   ", "t2"], ["3", "second", "t3"]],
    )
    assert load_prompts(path) == ["first, with comma", "second"]
    assert load_prompts(str(path), limit=1) == ["first, with comma"]
    assert load_prompts(path, column="target") == ["t1", "t2", "t3"]


def test_auto_column_follows_preference_order(tmp_path: Path) -> None:
    # jailbreakbench has both Goal and Behavior: Goal comes first in KNOWN_PROMPT_COLUMNS
    path = _write_csv(tmp_path / "jbb.csv", ["Behavior", "Goal"], [["Short tag", "Full goal"]])
    assert KNOWN_PROMPT_COLUMNS.index("Goal") < KNOWN_PROMPT_COLUMNS.index("Behavior")
    assert load_prompts(path) == ["Full goal"]


def test_load_prompts_json_objects_and_strings(tmp_path: Path) -> None:
    objs = tmp_path / "objs.json"
    objs.write_text(json.dumps([{"instruction": "a"}, {"instruction": ""}, {"instruction": "b"}]))
    assert load_prompts(objs) == ["a", "b"]
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps(["x ", "", " y"]))
    assert load_prompts(strings) == ["x", "y"]


def test_load_prompts_jsonl_with_explicit_column(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [{"query": "q1", "id": 1}, {"query": "q2", "id": 2}, {"id": 3}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert load_prompts(path, column="query") == ["q1", "q2"]
    assert load_prompts(path, column="id") == ["1", "2", "3"]


def test_load_prompts_txt_one_a_line(tmp_path: Path) -> None:
    path = tmp_path / "p.TXT"
    path.write_text("one\n\n  two  \n   \nthree")
    assert load_prompts(path) == ["one", "two", "three"]


def test_load_records_renames_and_selects(tmp_path: Path) -> None:
    path = tmp_path / "math.jsonl"
    rows = [{"question": " 1+1? ", "answer": "#### 2", "extra": 0}, {"question": "", "answer": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_records(path) == [{"question": "1+1?", "answer": "#### 2", "extra": 0}]
    assert load_records(path, columns={"question": "q", "answer": "a"}) == [
        {"q": "1+1?", "a": "#### 2"}
    ]
    csv_path = _write_csv(tmp_path / "r.csv", ["a", "b"], [["1", "2"], ["3", "4"], ["5", "6"]])
    assert load_records(csv_path, limit=2) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found.*check the path"):
        load_prompts(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_records(tmp_path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "prompts.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.xlsx'.*\.csv, \.json"):
        load_prompts(path)


def test_column_not_found_lists_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "p.csv", ["query", "label"], [["q", "1"]])
    with pytest.raises(ValueError, match=r"no known prompt column.*\['query', 'label'\]"):
        load_prompts(path)
    with pytest.raises(ValueError, match=r"column 'nope' not found.*\['query', 'label'\]"):
        load_prompts(path, column="nope")
    with pytest.raises(ValueError, match=r"column 'answer' not found.*\['query', 'label'\]"):
        load_records(path, columns={"query": "question", "answer": "answer"})


def test_empty_result(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "p.csv", ["prompt", "other"], [["", "x"], ["  ", "y"]])
    with pytest.raises(ValueError, match="no prompts in .*check the column/filters"):
        load_prompts(path)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(ValueError, match="no prompts in .*check the column/filters"):
        load_prompts(blank)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="no prompts in .*no rows"):
        load_prompts(empty)
    with pytest.raises(ValueError, match="no records in .*no rows"):
        load_records(empty)
    with pytest.raises(ValueError, match="no records in"):
        load_records(path, columns={"prompt": "prompt"})


def test_bad_json_and_limit(tmp_path: Path) -> None:
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"prompt": "a"}))
    with pytest.raises(ValueError, match="expected a list of objects or strings"):
        load_prompts(obj)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(ValueError, match="line 2"):
        load_prompts(broken)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_prompts("bundled:harmful", limit=0)


# --------------------------------------------------------------------------- hf: sources


def test_hf_source_uses_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fake_load_dataset(path: str, name: str | None = None, split: str | None = None) -> list:
        calls.append((path, name, split))
        return [{"question": "What is 2+2?", "answer": "4"}, {"question": " ", "answer": ""}]

    monkeypatch.setitem(
        sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset)
    )
    assert load_prompts("hf:openai/gsm8k:main", split="test") == ["What is 2+2?"]
    assert calls == [("openai/gsm8k", "main", "test")]
    assert load_records("hf:some/set", columns={"answer": "a"}) == [{"a": "4"}]
    assert calls[-1] == ("some/set", None, "train")


def test_hf_source_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match=r"pip install 'thinklens\[datasets\]'"):
        load_prompts("hf:some/set")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(RuntimeError, match="some/set.*no network.*local file path"):
        load_prompts("hf:some/set")
    with pytest.raises(ValueError, match="empty Hugging Face dataset id"):
        load_prompts("hf:")


# --------------------------------------------------------------------------- shared public data


@pytest.mark.parametrize(
    ("name", "column", "count"),
    [
        ("advbench.csv", "goal", 520),
        ("strongreject.csv", "forbidden_prompt", 313),
        ("jailbreakbench.csv", "Goal", 100),
        ("harmbench_val.csv", "Behavior", 80),
        ("malicious_instruct.txt", "text", 100),
    ],
)
def test_shared_harmful_sets(shared_data: Path, name: str, column: str, count: int) -> None:
    prompts = load_prompts(shared_data / name)
    assert len(prompts) == count
    assert prompts == load_prompts(shared_data / name, column=column)
    assert all(p and p == p.strip() for p in prompts)
    assert load_prompts(shared_data / name, limit=7) == prompts[:7]


def test_shared_harmless_json(shared_data: Path) -> None:
    prompts = load_prompts(shared_data / "harmless_test.json")
    assert len(prompts) > 1000
    assert prompts == load_prompts(shared_data / "harmless_test.json", column="instruction")


def test_shared_gsm8k_records(shared_data: Path) -> None:
    records = load_records(
        shared_data / "gsm8k_test.jsonl", columns={"question": "q", "answer": "a"}
    )
    assert len(records) == 1319
    assert set(records[0]) == {"q", "a"}
    assert all("####" in r["a"] for r in records)
    plain = load_records(shared_data / "gsm8k_test.jsonl", limit=3)
    assert [set(r) for r in plain] == [{"question", "answer"}] * 3
    assert load_prompts(shared_data / "gsm8k_test.jsonl", limit=3) == [r["question"] for r in plain]
