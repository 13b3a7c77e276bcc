"""The sweep config: one YAML or TOML file, parsed strictly, and the grid of cells it defines.

Example (YAML; the same keys work in TOML)::

    model: organism-cliff
    methods: [direct, ablation, attribution]
    fractions: [0.005, 0.015, 0.03, 0.1]
    modes: [scale]
    seeds: [0, 1, 2]
    data: {n_score: 16, n_eval: 24, frame: true}
    generation: {max_new_tokens: 128}

Unknown keys, wrong types and out-of-range values are errors that name the key. A cell is one
(method, fraction, mode, seed); its key hashes the cell with every setting that changes its
result (``setup``), so a rerun of the same config finds the cells it already finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinklens.backends import BACKENDS
from thinklens.interventions.heads.attribution import METHODS
from thinklens.interventions.heads.metric import METRICS
from thinklens.interventions.heads.scores import head_count

MODES = ("scale", "zero", "mean")


@dataclass(frozen=True)
class DataConfig:
    """Prompts: harmful ones to score heads on and to attack, harmless ones to measure damage.

    The first ``n_score`` harmful prompts are rolled out to get the thinking heads are scored
    on (or ``traces`` gives that thinking); the next ``n_eval`` harmful and the first ``n_eval``
    harmless prompts measure ASR, refusals and KL.
    """

    harmful: str = "bundled:harmful"
    harmless: str = "bundled:harmless"
    split: str = "test"
    n_score: int = 16
    n_eval: int = 16
    frame: bool = True  # wrap harmful prompts in a jailbreak framing (organisms.templates)
    traces: str | None = None  # JSONL/CSV of prompt + response (or thinking) to score on


@dataclass(frozen=True)
class ProbeConfig:
    """The refusal probe: a saved one, or one trained from the model's behaviour."""

    path: str | None = None
    layer: int = -1
    n_train: int = 64  # prompts of each kind (the "train" split) when training
    max_new_tokens: int = 96


@dataclass(frozen=True)
class GenerationConfig:
    """Answer generation under ablation (greedy unless ``temperature`` > 0)."""

    max_new_tokens: int = 128
    batch_size: int = 16
    temperature: float = 0.0
    score_max_new_tokens: int = 128  # for the rollouts whose thinking heads are scored on


@dataclass(frozen=True)
class SweepConfig:
    """Everything a head-ablation sweep needs; see the module docstring for the file format."""

    model: str
    backend: str = "transformer_lens"
    methods: tuple[str, ...] = METHODS
    metric: str = "probe"
    score_mode: str = "zero"  # how scoring ablates a head: zero or mean
    fractions: tuple[float, ...] = (0.005, 0.015, 0.03, 0.1)
    modes: tuple[str, ...] = ("scale",)  # how generation ablates the chosen heads
    seeds: tuple[int, ...] = (0,)
    random_control: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    out: str = "sweep.sqlite"

    def __post_init__(self) -> None:
        _one_of("methods", self.methods, METHODS)
        _one_of("modes", self.modes, MODES)
        _one_of("metric", (self.metric,), METRICS)
        _one_of("score_mode", (self.score_mode,), ("zero", "mean"))
        _one_of("backend", (self.backend,), BACKENDS)
        for f in self.fractions:
            try:
                head_count(1000, fraction=f)
            except ValueError as err:
                raise ValueError(f"fractions: {err}") from None
        for name, values in (("fractions", self.fractions), ("seeds", self.seeds)):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must be a non-empty list without repeats")
        if self.data.n_score < 1 or self.data.n_eval < 1:
            raise ValueError("data.n_score and data.n_eval must be at least 1")

    def setup(self) -> dict[str, Any]:
        """The settings every cell's result depends on (not the grid, not the output path)."""
        d = dataclasses.asdict(self)
        for grid in ("methods", "fractions", "modes", "seeds", "random_control", "out"):
            d.pop(grid)
        return d

    def setup_key(self) -> str:
        return _hash(self.setup())

    def cells(self) -> list[Cell]:
        """The grid: the unablated model, each method's top heads, and random heads.

        With greedy generation a scored method gives the same heads and answers for every
        seed, so only random heads (drawn per seed) repeat over seeds.
        """
        gen_seeds = self.seeds if self.generation.temperature > 0 else self.seeds[:1]
        out = [Cell("none", 0.0, "none", s) for s in gen_seeds]
        for method in self.methods:
            out += [
                Cell(method, f, m, s) for f in self.fractions for m in self.modes for s in gen_seeds
            ]
        if self.random_control:
            out += [
                Cell("random", f, m, s)
                for f in self.fractions
                for m in self.modes
                for s in self.seeds
            ]
        return out


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: which heads (method, fraction, seed) and how they are ablated."""

    method: str  # "none", a scoring method, or "random"
    fraction: float
    mode: str
    seed: int

    def key(self, setup_key: str) -> str:
        return _hash(dict(setup=setup_key, **dataclasses.asdict(self)))


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _one_of(name: str, values: tuple, known: tuple) -> None:
    for v in values:
        if v not in known:
            raise ValueError(f"{name}: {v!r} is not one of {', '.join(map(str, known))}")


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against a field's type (dataclass, tuple[X, ...], X | None, scalar)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        values = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(values))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def _build(cls: type, raw: Any, where: str) -> Any:
    """A config dataclass from a mapping; unknown or missing keys are errors naming the key."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table of keys, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ValueError(f"unknown key {key!r} in {where}; known keys: {', '.join(fields)}")
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for key in required:
        if key not in raw:
            raise ValueError(f"{where} lacks the required key {key!r}")
    hints = typing.get_type_hints(cls)
    kw = {
        k: _coerce(hints[k], v, f"{where}.{k}" if where != "config" else k) for k, v in raw.items()
    }
    return cls(**kw)


def parse_config(raw: Mapping[str, Any], where: str = "config") -> SweepConfig:
    """A SweepConfig from an already-read mapping (strict, like ``load_config``)."""
    return _build(SweepConfig, raw, where)


def load_config(path: str | Path) -> SweepConfig:
    """Read a sweep config from ``.yaml``/``.yml`` or ``.toml``.

    A relative ``out`` is taken relative to the config file's folder.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no sweep config at {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text) or {}
    elif path.suffix == ".toml":
        raw = tomllib.loads(text)
    else:
        raise ValueError(f"cannot read {path.name}: a sweep config is .yaml, .yml or .toml")
    try:
        cfg = parse_config(raw, "config")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if not Path(cfg.out).is_absolute():
        cfg = dataclasses.replace(cfg, out=str(path.parent / cfg.out))
    return cfg
