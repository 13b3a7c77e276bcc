"""Configs (``thinklens.config``): flags made from the fields, strict files, flags over files."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from thinklens.config import Config, ModelConfig, add_command, default_of, option


@dataclass(frozen=True, kw_only=True)
class Inner(Config):
    """A nested table."""

    n: int = option(3, help="things")
    name: str | None = option(None)


@dataclass(frozen=True, kw_only=True)
class Toy(ModelConfig):
    """Every shape of field a command has."""

    traces: str = option(help="traces", positional=True)
    out: str = option(help="result file", relative=True)
    method: Literal["lexical", "embedding"] = option("lexical", help="rule")
    ks: tuple[int, ...] = option((8, 16), help="prefix lengths")
    formats: tuple[str, ...] = option(("a", "b"), choices=("a", "b", "c"))
    per_head: bool = option(False, help="one row per head")
    insertion: bool = option(True, help="run the insertion")
    positions: int | str = option("last", help="last, or k")
    fraction: float | None = option(None, help="share")
    inner: Inner = field(default_factory=Inner)


def _parser(seen: list) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thinklens")
    add_command(p.add_subparsers(dest="command"), "toy", Toy, seen.append, "a toy")
    return p


def _run(argv: list[str]) -> Toy:
    seen: list = []
    args = _parser(seen).parse_args(["toy", *argv])
    args.fn(args)
    return seen[0]


def test_flags_are_the_fields_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        _parser([]).parse_args(["toy", "--help"])
    text = capsys.readouterr().out
    flat = "".join(text.split())
    for flag in ("--backend", "--out", "--method", "--ks", "--formats", "--positions"):
        assert flag in text
    assert "--per-head,--no-per-head" in flat and "--insertion,--no-insertion" in flat
    assert "--inner.nN" in flat and "--config FILE" in text
    assert "{lexical,embedding}" in flat and "[{a,b,c}...]" in flat
    assert "(default:lexical)" in flat and "(default:816)" in flat
    assert "(default:transformer_lens)" in flat  # load_model's own default
    # With only the required values, the flags give the defaults of the dataclass.
    assert _run(["m", "t", "--out", "o"]) == Toy(model="m", traces="t", out="o")


def test_flags_parse_every_shape():
    cfg = _run(
        ["m", "t", "--out", "o", "--method", "embedding", "--ks", "4", "--no-insertion",
         "--per-head", "--positions", "5", "--fraction", "0.5", "--inner.n", "7"]
    )  # fmt: skip
    assert cfg.ks == (4,) and cfg.method == "embedding" and cfg.per_head and not cfg.insertion
    assert cfg.positions == 5 and cfg.fraction == 0.5 and cfg.inner == Inner(n=7)
    assert _run(["m", "t", "--out", "o", "--positions", "last"]).positions == "last"
    with pytest.raises(SystemExit):  # argparse checks the choices
        _run(["m", "t", "--out", "o", "--method", "fuzzy"])


def test_a_config_file_and_flags_give_the_same_config(tmp_path):
    flags = ["m", "t", "--out", str(tmp_path / "o.csv"), "--ks", "4", "32", "--per-head"]
    flags += ["--positions", "3", "--inner.n", "5", "--backend", "nnsight"]
    yaml = tmp_path / "toy.yaml"
    yaml.write_text(
        f"model: m\ntraces: t\nout: {tmp_path / 'o.csv'}\nks: [4, 32]\nper_head: true\n"
        "positions: 3\ninner: {n: 5}\nbackend: nnsight\n"
    )
    toml = tmp_path / "toy.toml"
    toml.write_text(
        f'model = "m"\ntraces = "t"\nout = "{tmp_path / "o.csv"}"\nks = [4, 32]\n'
        'per_head = true\npositions = 3\nbackend = "nnsight"\n[inner]\nn = 5\n'
    )
    expected = _run(flags)
    assert Toy.from_file(yaml) == Toy.from_file(toml) == expected
    assert _run(["--config", str(yaml)]) == expected
    assert Toy.from_dict(dataclasses.asdict(expected)) == expected


def test_flags_override_the_file_key_by_key(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("model: m\ntraces: t\nout: o.csv\nks: [4]\ninner: {n: 5, name: x}\n")
    cfg = _run(["other", "--config", str(path), "--inner.n", "9", "--ks", "1", "2"])
    assert cfg.model == "other" and cfg.traces == "t" and cfg.ks == (1, 2)
    assert cfg.inner == Inner(n=9, name="x")  # the flag replaced one key of the table
    assert cfg.out == str(tmp_path / "o.csv")  # a relative path in a file is the file's
    assert _run(["--config", str(path), "--out", "o.csv"]).out == "o.csv"  # a flag's is not


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: m\ntraces: t\nout: o\nmethd: x\n", "unknown key 'methd' in config; known keys: "
         "model, backend, traces, out, method"),
        ("model: m\ntraces: t\nout: o\ninner: {m: 1}\n", "unknown key 'm' in inner; known keys: n"),
        ("model: m\ntraces: t\nout: 3\n", "out must be str, got 3"),
        ("model: m\ntraces: t\nout: o\nks: [1, x]\n", r"ks\[1\] must be int, got 'x'"),
        ("model: m\ntraces: t\nout: o\ninner: {n: 1.5}\n", "inner.n must be int, got 1.5"),
        ("model: m\ntraces: t\nout: o\nper_head: 1\n", "per_head must be bool, got 1"),
        ("model: m\ntraces: t\nout: o\nmethod: fuzzy\n", "method: 'fuzzy' is not one of lexical"),
        ("model: m\ntraces: t\nout: o\nformats: [d]\n", "formats: 'd' is not one of a, b, c"),
        ("model: m\ntraces: t\nout: o\nbackend: vllm\n", "backend: 'vllm' is not one of"),
        ("model: m\ntraces: t\nout: o\ninner: 3\n", "inner must be a table of keys, got int"),
        ("model: m\ntraces: t\n", "config lacks the required key 'out'"),
        ("- model\n", "must hold a table of keys"),
    ],
)  # fmt: skip
def test_strict_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Toy.from_file(path)


def test_missing_values_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--out is required: give it here or in a --config"):
        _run(["m", "t"])
    with pytest.raises(ValueError, match="^traces is required"):
        _run(["m", "--out", "o"])
    with pytest.raises(FileNotFoundError, match="no config file at"):
        _run(["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match="a config file is .yaml, .yml, .toml"):
        Toy.from_file(tmp_path / "c.json")
    (tmp_path / "c.yaml").write_text("model: m\ntraces: t\nout: o\nmethod: fuzzy\n")
    with pytest.raises(ValueError, match=r"c.yaml: method: 'fuzzy' is not one of"):
        _run(["--config", str(tmp_path / "c.yaml")])
    with pytest.raises(ValueError, match="is not one of"):  # Python callers are checked too
        Toy(model="m", traces="t", out="o", formats=("z",))


def test_default_of_reads_the_functions_default():
    def f(a: int, b: int = 4) -> int:
        return a + b

    assert default_of(f, "b") == 4
    with pytest.raises(TypeError, match="has no default"):
        default_of(f, "a")


def test_the_organism_recipe_is_a_strict_config():
    from thinklens.organisms import Stage2Recipe

    published = dict(per_goal=4, framed_share=0.5, replay_harmless=0.5, replay_harmful=0.25)
    published |= dict(instructions=True, restate=False, harmless_goals=False, epochs=1, lr=5e-4)
    published |= dict(questions=True, wide=True, more_instructions=False)
    assert dataclasses.asdict(Stage2Recipe()) == published  # the packaged adapter's recipe
    assert Stage2Recipe.from_dict({"per_goal": 2, "lr": 1}) == Stage2Recipe(per_goal=2, lr=1.0)
    with pytest.raises(ValueError, match="unknown key 'per_goals' in recipe; known keys: per_goal"):
        Stage2Recipe.from_dict({"per_goals": 2}, "recipe")
    with pytest.raises(TypeError):
        Stage2Recipe(3)  # keywords only: a recipe names what it changes
