"""The diagnosis's data: :class:`Thresholds`, :class:`Issue`, :class:`LayerVerdict`
and :class:`Diagnosis` with its table and summary (the rules that fill them are in
:mod:`lib.diagnose.rules`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from lib import probes as _probes
from lib._checks import check_int, check_number
from lib.diagnose.advice import KINDS
from lib.probes._names import abbreviate as _abbreviate

__all__ = ["Thresholds", "Issue", "LayerVerdict", "Diagnosis"]


@dataclass(frozen=True)
class Thresholds:
    """The numbers behind the rules (see the module docstring)."""

    vanishing_ratio: float = 1e-3
    exploding_ratio: float = 1e3
    saturated_fraction: float = 0.5
    dead_fraction: float = 0.3
    large_gain: float = 3.0
    time_ratio: float = 1e-3
    norm_scale: float = 0.01
    dead_min_samples: int = 8

    def __post_init__(self) -> None:
        for name in ("vanishing_ratio", "exploding_ratio", "large_gain", "time_ratio",
                     "norm_scale"):
            # stored as the checked float (a numpy scalar or a tensor would show in the repr)
            object.__setattr__(self, name, check_number(getattr(self, name),
                                                        f"Thresholds.{name}", gt=0))
        for name in ("saturated_fraction", "dead_fraction"):
            v = check_number(getattr(self, name), f"Thresholds.{name}", ge=0)
            if v >= 1:
                raise ValueError(f"Thresholds.{name} must be a fraction in [0, 1), got {v!r}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "dead_min_samples",
                           check_int(self.dead_min_samples, "Thresholds.dead_min_samples", ge=1))
        if self.vanishing_ratio >= self.exploding_ratio:
            raise ValueError("Thresholds.vanishing_ratio must be below exploding_ratio")


@dataclass(frozen=True)
class Issue:
    """One problem: what, where, the evidence, the fix, and the chapter label to read."""

    kind: str
    layers: tuple[str, ...]
    evidence: str
    fix: str
    chapter: str
    see_also: tuple[str, ...] = ()

    def describe(self) -> str:
        """A few lines of plain language."""
        from lib.diagnose.advice import CHAPTERS, _chapter  # noqa: F401 - titles and urls

        title, url = _chapter(self.chapter)
        also = f" (see also {', '.join(self.see_also)})" if self.see_also else ""
        return (f"{self.kind.upper()} in {_span(self.layers)}: {self.evidence}\n"
                f"    fix: {self.fix}\n"
                f"    read: {self.chapter}, \"{title}\" {url}{also}")


@dataclass(frozen=True)
class LayerVerdict:
    """One layer's numbers and verdict; ``note`` says which rules do not apply, and why."""

    name: str
    kind: str
    activation: str | None
    weight_grad_norm: float
    relative_grad: float
    relative_signal: float
    saturated: float
    dead: float
    nonfinite: bool
    flags: tuple[str, ...]
    gain: float = math.nan
    time_grad_ratio: float = math.nan
    note: str = ""

    @property
    def verdict(self) -> str:
        """The layer's problems joined by ``+``, or ``"healthy"``."""
        return "+".join(self.flags) if self.flags else "healthy"


@dataclass
class Diagnosis:
    """What :func:`diagnose` found: per-layer verdicts and the model's issues (worst first)."""

    issues: list[Issue]
    layers: list[LayerVerdict]
    report: list[_probes.LayerStats]
    gradient_ratio: float
    signal_ratio: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    loss: float = math.nan
    parameters: list[_probes.ParamStats] = field(default_factory=list)
    coverage: float = math.nan

    @property
    def healthy(self) -> bool:
        return not self.issues

    @property
    def labels(self) -> list[str]:
        """The kinds of problem found, most severe first; empty when healthy."""
        return [i.kind for i in self.issues]

    @property
    def primary(self) -> str:
        return self.issues[0].kind if self.issues else "healthy"

    @property
    def chapters(self) -> list[str]:
        return [i.chapter for i in self.issues]

    def issue(self, kind: str) -> Issue | None:
        """The issue of that kind, or None."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return next((i for i in self.issues if i.kind == kind), None)

    def summary(self) -> str:
        """The verdict in plain language, with fixes and chapters to read."""
        ratio = (f"first/top weight-update ratio {_num(self.gradient_ratio)}, "
                 f"first/top backward-signal ratio {_num(self.signal_ratio)}")
        if self.healthy:
            dead = [v.dead for v in self.layers if not math.isnan(v.dead)]
            extra = f", at most {max(dead):.0%} dead units in a layer" if dead else ""
            return f"HEALTHY: no layer vanishes, explodes, saturates or dies ({ratio}{extra})."
        n = len(self.issues)
        head = f"{n} problem{'s' if n > 1 else ''} found; main problem: {self.primary} ({ratio})."
        return "\n".join([head] + [f"* {i.describe()}" for i in self.issues])

    def table(self, width: int = 24) -> str:
        """One row per layer: the key numbers and its verdict (paths abbreviated from the left)."""
        width = check_int(width, "width", ge=8)
        names = _abbreviate([v.name for v in self.layers], width)
        w = max([len(n) for n in names] + [5]) + 1
        head = (f"{'layer':<{w}}{'act':<9}{'|dL/dW|':>10}{'update':>9}{'signal':>9}"
                f"{'gain':>6}{'sat':>5}{'dead':>5}  verdict")
        lines = [head, "-" * (len(head) + 8)]
        for n, v in zip(names, self.layers):
            lines.append(
                f"{n:<{w}}{(v.activation or '-')[:8]:<9}{_fmt(v.weight_grad_norm, '10.2e')}"
                f"{_fmt(v.relative_grad, '9.1e')}{_fmt(v.relative_signal, '9.1e')}"
                f"{_fmt(v.gain, '6.2f')}{_fmt(v.saturated, '5.0%')}{_fmt(v.dead, '5.0%')}"
                f"  {v.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table() + "\n\n" + self.summary()


def _num(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2g}"


def _fmt(v: float, spec: str) -> str:
    if v is None or math.isnan(v):
        return "-".rjust(int(spec.split(".")[0]))
    return format(v, spec)


def _span(names: Sequence[str]) -> str:
    if len(names) <= 3:
        return ", ".join(f"'{n}'" for n in names)
    return f"'{names[0]}' ... '{names[-1]}' ({len(names)} layers)"
