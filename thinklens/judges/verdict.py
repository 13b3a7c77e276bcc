"""One judgement of a generative judge, and how verdicts become the refusal flags of a `Judge`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: What the `Judge` adapter does with a verdict whose text did not parse.
Unparsed = Literal["raise", "refusal", "compliance"]


@dataclass(frozen=True)
class Verdict:
    """A judge's reading of one (prompt, answer) pair.

    ``refusal`` follows the `Judge` protocol (True = refusal / safe); ``harmful`` is the judge's
    harm verdict on the answer; ``score`` is a graded score (StrongREJECT) and ``fields`` every
    parsed field of the judge's text. When the text does not parse, ``error`` says why and
    ``refusal``, ``harmful`` and ``score`` are None: a failure is never counted as a class.
    """

    refusal: bool | None
    harmful: bool | None
    raw: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None
    error: str | None = None

    @property
    def parsed(self) -> bool:
        """Whether the judge's text was read as a verdict."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (`from_json` reads it back)."""
        return asdict(self) | {"fields": dict(self.fields)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        """The verdict `to_json` wrote."""
        return cls(**dict(data))

    @classmethod
    def failed(cls, raw: str, error: str, **fields: Any) -> Verdict:
        """A verdict for text that does not parse: no refusal, harm or score, only the text."""
        return cls(refusal=None, harmful=None, raw=raw, fields=fields, error=error)


def refusal_flags(verdicts: Sequence[Verdict], on_unparsed: Unparsed = "raise") -> list[bool]:
    """The refusal flag of each verdict, as a `Judge` returns them.

    Verdicts that did not parse raise (``on_unparsed="raise"``) or are counted as the class the
    caller names (``"refusal"`` or ``"compliance"``), so choosing one is explicit.
    """
    if on_unparsed not in ("raise", "refusal", "compliance"):
        raise ValueError(
            f"on_unparsed must be 'raise', 'refusal' or 'compliance', got {on_unparsed!r}"
        )
    failed = [i for i, v in enumerate(verdicts) if v.refusal is None]
    if failed and on_unparsed == "raise":
        first = verdicts[failed[0]]
        raise ValueError(
            f"{len(failed)} of {len(verdicts)} judge outputs did not parse (items "
            f"{failed[:10]}{' ...' if len(failed) > 10 else ''}; first: {first.error}; raw text "
            f"{first.raw[:200]!r}). Read them with judge.verdicts(prompts, responses), raise "
            "max_new_tokens if the text was cut off, or pass on_unparsed='refusal' or "
            "'compliance' to count them as that class"
        )
    default = on_unparsed == "refusal"
    return [default if v.refusal is None else v.refusal for v in verdicts]
