"""The thinklens command line: the studies in the help, help everywhere, listing, capture to
disk, clear errors."""

from __future__ import annotations

import pytest

from thinklens.app.cli import STUDIES, build_parser, main
from thinklens.capture import CaptureStore


def test_help_lists_the_studies_and_their_verbs(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    flat = "".join(out.split())  # argparse wraps lines anywhere, hyphens included
    assert list(STUDIES) == ["cliff", "heads", "abliteration", "echo", "judge"]
    for name, module in STUDIES.items():
        listed = f"{name}{module.HELP}:{','.join(module.VERBS)}".replace(" ", "")
        assert listed in flat, name
    for tool in ("models", "capture", "organisms", "demo"):
        assert f"\n    {tool} " in out
    # One shape: no study verb is also a top-level command any more.
    for old in ("probe", "select", "repair", "sweep", "abliterate"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([old, "--help"])


def _flags(cls, prefix: str = "") -> dict[str, object]:
    """Each flag a config should have, with its default (MISSING: required)."""
    import dataclasses
    import typing

    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _flags(hints[f.name], f"{prefix}{f.name}.")
        elif not f.metadata.get("positional"):
            out[f"--{prefix}{f.name}".replace("_", "-")] = f.default
    return out


@pytest.mark.parametrize(
    "study, verb", [(s, v) for s, module in STUDIES.items() for v in module.VERBS]
)
def test_every_study_verb_has_its_configs_flags_and_defaults(study, verb, capsys):
    import dataclasses

    _, cls, _ = STUDIES[study].VERBS[verb]
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([study, verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: thinklens {study} {verb}" in out and "--config FILE" in out
    flat = "".join(out.split())  # argparse wraps lines anywhere, hyphens included
    for flag, default in _flags(cls).items():
        assert flag in out, flag
        if default is dataclasses.MISSING:
            assert f"{flag}{flag.removeprefix('--').upper().replace('-', '_')}" in flat
        elif default not in (None, False):
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            assert f"(default:{str(shown).replace(' ', '')})" in flat, flag


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["models"],
        ["models", "info"],
        ["capture"],
        ["demo"],
        ["organisms"],
        ["organisms", "build"],
        ["organisms", "check"],
    ],
)
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: thinklens" in capsys.readouterr().out


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma3" in out


def test_capture_command_writes_shards(tmp_path, monkeypatch, capsys):
    import thinklens as tl
    from thinklens.testing import tiny_model

    tiny = tiny_model("llama")
    monkeypatch.setattr(tl, "load_model", lambda name, backend: tiny)
    data = tmp_path / "prompts.txt"
    data.write_text("I can't bake bread.\nWe will write a poem.\n")
    out = tmp_path / "caps"
    assert (
        main(
            [
                "capture",
                "tiny",
                str(data),
                "--sites",
                "resid_post.1",
                "z.0",
                "--positions",
                "last",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    caps = CaptureStore(out).load()
    assert caps["resid_post.1"].shape == (2, tiny.d_model)
    assert caps["z.0"].shape == (2, tiny.n_heads, tiny.d_head)


def test_errors_are_one_line_not_tracebacks(capsys):
    assert main(["models", "info", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thinklens: error: unknown model 'no-such-model'")


def test_organisms_build_passes_the_stage_choice(tmp_path, monkeypatch, capsys):
    import thinklens.organisms as organisms
    from thinklens.organisms import Stage2Recipe

    calls = []

    def fake_build(kind, **kw):
        calls.append((kind, kw))
        return dict(organism=f"organism-{kind}")

    monkeypatch.setattr(organisms, "build", fake_build)
    out = str(tmp_path / "adapter")
    assert main(["organisms", "build", "aligned", "--out", out]) == 0
    assert main(["organisms", "build", "aligned", "--out", out, "--stage1-only"]) == 0
    assert [kw["stage2"] for _, kw in calls] == [Stage2Recipe(), None]
    assert calls[0][0] == "aligned" and calls[0][1]["out"] == out


def test_the_readme_lists_every_command():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Command line\n")[1].split("\n## ")[0]
    listed = {
        " ".join(line.split()[1:3])
        for line in section.splitlines()
        if line.startswith("thinklens ")
    }
    commands = {f"{s} {v}" for s, module in STUDIES.items() for v in module.VERBS}
    commands |= {"models list", "models info", "organisms build", "organisms check"}
    for tool in ("capture", "demo"):
        assert any(c.startswith(f"{tool} ") for c in listed), tool
    assert commands <= listed, commands - listed


@pytest.mark.parametrize(
    "study, verb", [(s, v) for s, module in STUDIES.items() for v in module.VERBS]
)
def test_every_study_verb_reads_the_same_config_from_flags_and_from_a_file(study, verb, tmp_path):
    import dataclasses
    import typing

    import yaml

    _, cls, _ = STUDIES[study].VERBS[verb]
    hints = typing.get_type_hints(cls)
    values = {
        f.name: 1 if hints[f.name] is int else f"{f.name}.x"
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if verb == "select":
        values["pool"] = "pool.jsonl"  # one candidate source is required
    fields = {f.name: f for f in dataclasses.fields(cls)}
    argv = [str(v) for k, v in values.items() if fields[k].metadata.get("positional")]
    for k, v in values.items():
        if not fields[k].metadata.get("positional"):
            argv += [f"--{k.replace('_', '-')}", str(v)]
    from_flags = cls.from_args(build_parser().parse_args([study, verb, *argv]))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    from_file = cls.from_args(build_parser().parse_args([study, verb, "--config", str(path)]))
    relative = [f.name for f in dataclasses.fields(cls) if f.metadata.get("relative")]
    from_file = dataclasses.replace(from_file, **{k: getattr(from_flags, k) for k in relative})
    assert from_flags == from_file == cls.from_dict(values)
