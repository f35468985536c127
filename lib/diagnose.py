"""Plain-language diagnosis of a gradient-flow probe report.

:func:`diagnose` turns a :mod:`lib.probes` report (one :class:`~lib.probes.LayerStats`
per weight layer, in forward order) into a verdict per layer and for the whole
model; :func:`diagnose_model` runs the one forward/backward pass that produces
the report, on any ``nn.Module``::

    d = lib.diagnose.diagnose_model(model, x, y)
    print(d.table())      # one row per layer, with its verdict
    print(d.summary())    # what is wrong, the suggested fix, the chapter to read
    d.healthy, d.labels   # True/False, e.g. ["vanishing"]

The rules (defaults in :class:`Thresholds`; "last" is the last layer of the
report with a positive gradient, usually the output layer):

* **non-finite** - a layer saw NaN or Inf in its output, pre-activation,
  activation or gradients.
* **exploding** - a layer's weight-gradient norm ``|dL/dW|`` is above
  ``exploding_norm`` (100), or its ``|dL/dW|`` or backward signal ``|dL/dout|``
  is more than ``exploding_ratio`` (1e3) times the last layer's. The ratio
  catches a gradient that grows layer after layer on its way back; the
  absolute bound catches a too-large initialisation, where the growing
  forward signal and the growing backward signal make every weight gradient
  huge and the ratio near 1. The bound assumes a mean-reduced loss (PyTorch's
  default), whose healthy gradient norms are of order 0.01-10.
* **vanishing** - a layer's ``|dL/dW|`` or ``|dL/dout|`` is below
  ``vanishing_ratio`` (1e-3) times the last layer's: the gradient reaching it
  has shrunk a thousandfold on the way back.
* **saturated** - more than ``saturated_fraction`` (50 %) of a sigmoid/tanh
  layer's pre-activations lie where the derivative is below 5 % of its maximum
  (:data:`lib.probes.SATURATION`).
* **dead** - more than ``dead_fraction`` (30 %) of a layer's units output
  exactly zero for every example of the batch, so no gradient passes them.
* **healthy** - none of the above, for every layer.

Each problem comes with a suggested fix and the label of the chapter that
explains it. :func:`examples` holds small models with each problem, and
``python -m lib.diagnose`` runs all of this from the command line (see
:func:`main`).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from lib import data as _data
from lib import networks as _networks
from lib import probes as _probes
from lib import seeds as _seeds

__all__ = ["Thresholds", "Issue", "LayerVerdict", "Diagnosis", "ModelError", "KINDS", "CHAPTERS",
           "diagnose", "diagnose_model", "examples", "SmallCNN", "main"]

#: Every verdict, most severe first. A model's main problem is the first one it has.
KINDS: tuple[str, ...] = ("non-finite", "exploding", "dead", "saturated", "vanishing")

#: The chapter that explains each problem (a MyST label in the book).
CHAPTERS: dict[str, str] = {
    "non-finite": "ch-norm-residual",
    "exploding": "ch-init",
    "dead": "ch-dying-relu",
    "saturated": "ch-sigmoid-tanh",
    "vanishing": "ch-chain-rule",
}

_BOUNDED = ("sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign")

_FIX: dict[str, str] = {
    "non-finite": ("find the first layer with NaN/Inf; lower the learning rate, clip the gradient "
                   "norm, and check the input for NaN and the loss for log(0)"),
    "exploding": ("shrink the initial weights to the variance that keeps the signal steady (He "
                  "init for ReLU, Xavier for tanh); clip the gradient norm or add normalisation "
                  "if it grows during training"),
    "dead": ("lower the learning rate, initialise with He init, or use an activation with a "
             "gradient on its negative side (Leaky ReLU, ELU, GELU)"),
    "saturated": ("bring the pre-activations back to the linear region: smaller initial weights "
                  "(Xavier), normalisation before the activation, or a non-saturating activation "
                  "(ReLU family)"),
    "vanishing": ("use an initialisation matched to the activation (He for ReLU), add "
                  "normalisation or residual connections"),
}
_FIX_VANISHING_BOUNDED = ("replace sigmoid/tanh in the hidden layers by ReLU with He init, or "
                          "keep them and add normalisation or residual connections")
_SEE_ALSO: dict[str, tuple[str, ...]] = {
    "non-finite": ("ch-init",),
    "exploding": ("ch-norm-residual",),
    "dead": ("ch-init",),
    "saturated": ("ch-init", "ch-relu"),
    "vanishing": ("ch-init", "ch-norm-residual"),
}
_SEE_ALSO_VANISHING_BOUNDED = ("ch-sigmoid-tanh", "ch-relu", "ch-init")


class ModelError(RuntimeError):
    """The model could not be run: its forward pass, loss or backward pass raised."""


@dataclass(frozen=True)
class Thresholds:
    """The numbers behind the rules (see the module docstring)."""

    vanishing_ratio: float = 1e-3
    exploding_ratio: float = 1e3
    exploding_norm: float = 1e2
    saturated_fraction: float = 0.5
    dead_fraction: float = 0.3

    def __post_init__(self) -> None:
        for name in ("vanishing_ratio", "exploding_ratio", "exploding_norm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"Thresholds.{name} must be a positive number, got {v!r}")
        for name in ("saturated_fraction", "dead_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"Thresholds.{name} must be a fraction in [0, 1), got {v!r}")
        if self.vanishing_ratio >= self.exploding_ratio:
            raise ValueError("Thresholds.vanishing_ratio must be below exploding_ratio")


@dataclass(frozen=True)
class Issue:
    """One problem of the model: what, where, the evidence, the fix, and where to read about it."""

    kind: str
    layers: tuple[str, ...]
    evidence: str
    fix: str
    chapter: str
    see_also: tuple[str, ...] = ()

    def describe(self) -> str:
        """A few lines of plain language."""
        where = _span(self.layers)
        also = f" (see also {', '.join(self.see_also)})" if self.see_also else ""
        return (f"{self.kind.upper()} in {where}: {self.evidence}\n"
                f"    fix: {self.fix}\n"
                f"    read: {self.chapter}{also}")


@dataclass(frozen=True)
class LayerVerdict:
    """One layer's numbers and verdict. ``relative_*`` are ratios to the last layer."""

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

    @property
    def healthy(self) -> bool:
        return not self.issues

    @property
    def labels(self) -> list[str]:
        """The kinds of problem found, most severe first; empty when healthy."""
        return [i.kind for i in self.issues]

    @property
    def primary(self) -> str:
        """The main problem (the most severe), or ``"healthy"``."""
        return self.issues[0].kind if self.issues else "healthy"

    @property
    def chapters(self) -> list[str]:
        """The chapter to read for each issue, in the same order."""
        return [i.chapter for i in self.issues]

    def issue(self, kind: str) -> Issue | None:
        """The issue of that kind, or None."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return next((i for i in self.issues if i.kind == kind), None)

    def summary(self) -> str:
        """The verdict in plain language, with fixes and chapters to read."""
        ratio = (f"first/last weight-gradient ratio {_num(self.gradient_ratio)}, "
                 f"first/last backward-signal ratio {_num(self.signal_ratio)}")
        if self.healthy:
            dead = [v.dead for v in self.layers if not math.isnan(v.dead)]
            extra = f", at most {max(dead):.0%} dead units in a layer" if dead else ""
            return (f"HEALTHY: no layer vanishes, explodes, saturates or dies ({ratio}{extra}).")
        n = len(self.issues)
        head = (f"{n} problem{'s' if n > 1 else ''} found; main problem: {self.primary} "
                f"({ratio}).")
        return "\n".join([head] + [f"* {i.describe()}" for i in self.issues])

    def table(self) -> str:
        """One row per layer: the key numbers and its verdict."""
        head = (f"{'layer':<16}{'act':<9}{'|dL/dW|':>10}{'W /last':>9}{'out /last':>10}"
                f"{'sat':>6}{'dead':>6}  verdict")
        lines = [head, "-" * (len(head) + 10)]
        for v in self.layers:
            lines.append(
                f"{v.name[:15]:<16}{(v.activation or '-')[:8]:<9}{_fmt(v.weight_grad_norm, '10.2e')}"
                f"{_fmt(v.relative_grad, '9.1e')}{_fmt(v.relative_signal, '10.1e')}"
                f"{_fmt(v.saturated, '6.0%')}{_fmt(v.dead, '6.0%')}  {v.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table() + "\n\n" + self.summary()


def _num(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2g}"


def _fmt(v: float, spec: str) -> str:
    width = int(spec.split(".")[0])
    if v is None or math.isnan(v):
        return "-".rjust(width)
    return format(v, spec)


def _span(names: Sequence[str]) -> str:
    if len(names) <= 3:
        return ", ".join(f"'{n}'" for n in names)
    return f"'{names[0]}' ... '{names[-1]}' ({len(names)} layers)"


def _last_positive(values: list[float]) -> float:
    for v in reversed(values):
        if math.isfinite(v) and v > 0:
            return v
    return math.nan


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return math.nan
    return a / b


def _first_finite(values: list[float]) -> float:
    return next((v for v in values if math.isfinite(v)), math.nan)


def diagnose(report: Sequence[_probes.LayerStats], *, thresholds: Thresholds | None = None) -> Diagnosis:
    """Apply the rules of the module docstring to a probe report.

    ``report`` is what ``rec.report()`` returns (or ``History.reports[i]``).
    """
    if isinstance(report, (str, bytes)) or not isinstance(report, Sequence):
        raise TypeError(f"report must be a list of lib.probes.LayerStats, got {type(report).__name__}")
    if not report:
        raise ValueError("report is empty: no layer with a weight ran in the forward pass")
    for i, r in enumerate(report):
        if not isinstance(r, _probes.LayerStats):
            raise TypeError(f"report[{i}] must be a lib.probes.LayerStats, got {type(r).__name__}")
    th = Thresholds() if thresholds is None else thresholds
    if not isinstance(th, Thresholds):
        raise TypeError(f"thresholds must be a lib.diagnose.Thresholds, got {type(th).__name__}")

    wg = [float(r.weight_grad_norm) for r in report]
    og = [float(r.output_grad_norm) for r in report]
    last_w, last_o = _last_positive(wg), _last_positive(og)

    verdicts: list[LayerVerdict] = []
    for r, w, o in zip(report, wg, og):
        rel_w, rel_o = _ratio(w, last_w), _ratio(o, last_o)
        flags = []
        if r.nonfinite:
            flags.append("non-finite")
        else:
            if (w > th.exploding_norm or rel_w > th.exploding_ratio or rel_o > th.exploding_ratio):
                flags.append("exploding")
            if not math.isnan(r.dead) and r.dead > th.dead_fraction:
                flags.append("dead")
            if not math.isnan(r.saturated) and r.saturated > th.saturated_fraction:
                flags.append("saturated")
            if rel_w < th.vanishing_ratio or rel_o < th.vanishing_ratio:
                flags.append("vanishing")
        verdicts.append(LayerVerdict(r.name, r.kind, r.activation, w, rel_w, rel_o, r.saturated,
                                     r.dead, bool(r.nonfinite), tuple(flags)))

    issues = [_issue(kind, [v for v in verdicts if kind in v.flags], th)
              for kind in KINDS if any(kind in v.flags for v in verdicts)]
    return Diagnosis(issues, verdicts, list(report),
                     _ratio(_first_finite(wg), last_w), _ratio(_first_finite(og), last_o), th)


def _issue(kind: str, rows: list[LayerVerdict], th: Thresholds) -> Issue:
    names = tuple(v.name for v in rows)
    fix, see_also = _FIX[kind], _SEE_ALSO[kind]
    if kind == "non-finite":
        evidence = f"NaN or Inf first appears at '{rows[0].name}'"
    elif kind == "exploding":
        big = max(rows, key=lambda v: v.weight_grad_norm if math.isfinite(v.weight_grad_norm) else -1)
        evidence = (f"the largest weight gradient is {big.weight_grad_norm:.3g} at '{big.name}' "
                    f"(limits: norm {th.exploding_norm:g}, ratio to the last layer "
                    f"{th.exploding_ratio:g})")
    elif kind == "dead":
        worst = max(rows, key=lambda v: v.dead)
        evidence = (f"up to {worst.dead:.0%} of the units of '{worst.name}' output zero for every "
                    f"example, so no gradient passes them (limit {th.dead_fraction:.0%})")
    elif kind == "saturated":
        worst = max(rows, key=lambda v: v.saturated)
        evidence = (f"{worst.saturated:.0%} of the pre-activations of '{worst.name}' sit where the "
                    f"{worst.activation} derivative is below 5 % of its peak "
                    f"(limit {th.saturated_fraction:.0%})")
    else:
        first = rows[0]
        evidence = (f"the gradient reaching '{first.name}' is {_min_rel(first):.1e} times the last "
                    f"layer's (limit {th.vanishing_ratio:g})")
        if any((v.activation or "") in _BOUNDED for v in rows):
            fix, see_also = _FIX_VANISHING_BOUNDED, _SEE_ALSO_VANISHING_BOUNDED
    return Issue(kind, names, evidence, fix, CHAPTERS[kind], see_also)


def _min_rel(v: LayerVerdict) -> float:
    vals = [x for x in (v.relative_grad, v.relative_signal) if not math.isnan(x)]
    return min(vals) if vals else math.nan


def _default_loss(out: Tensor, y: Tensor) -> Tensor:
    if not y.is_floating_point():
        return nn.functional.cross_entropy(out, y)
    return nn.functional.mse_loss(out, y.reshape(out.shape))


def diagnose_model(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                   *, thresholds: Thresholds | None = None) -> Diagnosis:
    """Run one forward/backward pass of ``model`` on ``(x, y)`` under :func:`lib.probes.watch`
    and diagnose the report.

    ``loss_fn(output, y)`` defaults to cross-entropy for integer labels and mean
    squared error for float targets. The model's ``.grad`` fields are cleared first
    and left holding this pass's gradients (as :func:`lib.probes.gradient_norms`
    does); its weights and train/eval mode are not changed. Raises
    :class:`ModelError` if the forward pass, the loss or the backward pass fails.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of examples along dim 0; got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable or None, got {type(loss_fn).__name__}")
    if not _probes.layer_modules(model):
        raise ValueError("model has no layer with a weight (Linear, Conv, ...) to probe")
    loss_fn = loss_fn or _default_loss

    model.zero_grad(set_to_none=True)
    with _probes.watch(model) as rec:
        try:
            out = model(x)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported the same way
            raise ModelError(f"the model's forward pass failed on an input of shape {tuple(x.shape)}: "
                             f"{type(exc).__name__}: {exc}") from exc
        try:
            loss = loss_fn(out, y)
        except Exception as exc:  # noqa: BLE001
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelError(f"the loss failed on the model's output ({shape}) and targets of shape "
                             f"{tuple(y.shape)}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise ModelError("the loss must be a scalar tensor that depends on the model's parameters")
        try:
            loss.backward()
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"the backward pass failed: {type(exc).__name__}: {exc}") from exc
    d = diagnose(rec.report(), thresholds=thresholds)
    d.loss = float(loss.detach())
    return d


# --- built-in examples ----------------------------------------------------------

class SmallCNN(nn.Module):
    """Two 3x3 convolutions with ReLU, max-pooling and a linear read-out, for 8x8 digits.

    Accepts images of shape (batch, 1, 8, 8) or flat rows of 64 pixels.
    """

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * channels * 16, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1, 1, 8, 8)
        x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.fc(x.flatten(1))


@functools.lru_cache(maxsize=4)
def _digits(seed: int) -> _data.Dataset:
    return _data.digits(seed=seed)


def _batch(seed: int, n: int = 256) -> tuple[Tensor, Tensor]:
    d = _digits(seed)
    return d.x_train[:n].clone(), d.y_train[:n].clone()


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return seed


def sigmoid_stack(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A 10-layer sigmoid MLP with PyTorch's default init: the gradient vanishes."""
    seed = _seed(seed)
    return (_networks.mlp(10, 64, "sigmoid", seed=seed), *_batch(seed))


def exploding_init(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A 10-layer ReLU MLP with weights N(0, 0.5^2), about 3x He's std: the gradient explodes."""
    seed = _seed(seed)
    model = _networks.mlp(10, 64, "relu", init="normal", init_params={"std": 0.5}, seed=seed)
    return (model, *_batch(seed))


def dead_relu(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A 6-layer He-init ReLU MLP after 20 Adam steps at lr 0.3: most of its units are dead."""
    from lib import training as _training  # imported here: only this example trains

    seed = _seed(seed)
    model = _networks.mlp(6, 64, "relu", init="he", seed=seed)
    _training.train(model, _digits(seed), steps=20, lr=0.3, optimizer="adam", batch_size=64,
                    seed=seed, eval_every=20, progress=False)
    return (model, *_batch(seed))


def saturated_tanh(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A 6-layer tanh MLP with weights N(0, 1): most pre-activations sit on the flat tails."""
    seed = _seed(seed)
    model = _networks.mlp(6, 64, "tanh", init="normal", init_params={"std": 1.0}, seed=seed)
    return (model, *_batch(seed))


def small_cnn(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A small CNN in plain PyTorch (SmallCNN, default init) on 8x8 digits: healthy."""
    seed = _seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeds.stream(seed, "small_cnn"))
        model = SmallCNN()
    x, y = _batch(seed)
    return model, x.reshape(-1, 1, 8, 8), y


def healthy_mlp(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """An 8-layer ReLU MLP with He init: healthy."""
    seed = _seed(seed)
    return (_networks.mlp(8, 64, "relu", init="he", seed=seed), *_batch(seed))


_EXAMPLES: dict[str, Callable[..., tuple[nn.Module, Tensor, Tensor]]] = {
    "sigmoid_stack": sigmoid_stack,
    "exploding_init": exploding_init,
    "dead_relu": dead_relu,
    "saturated_tanh": saturated_tanh,
    "small_cnn": small_cnn,
    "healthy_mlp": healthy_mlp,
}


def examples() -> dict[str, Callable[..., tuple[nn.Module, Tensor, Tensor]]]:
    """Built-in example models: name -> factory ``f(seed=0) -> (model, x, y)``.

    Each returns a model and a batch of 256 digits: ``sigmoid_stack`` (vanishing),
    ``exploding_init`` (exploding), ``dead_relu`` (dead, killed by 20 Adam steps at
    lr 0.3), ``saturated_tanh`` (saturated), ``small_cnn`` (a plain-PyTorch CNN,
    healthy) and ``healthy_mlp`` (healthy).
    """
    return dict(_EXAMPLES)


# --- command line -----------------------------------------------------------------

_USAGE_EPILOG = """\
examples:
  python -m lib.diagnose                          diagnose every built-in example
  python -m lib.diagnose --list                   list the built-in examples
  python -m lib.diagnose --example sigmoid_stack  per-layer table and diagnosis
  python -m lib.diagnose mypkg.models:build       your model, from an importable module
  python -m lib.diagnose path/to/file.py:build --input-shape 3,32,32

TARGET is MODULE:FACTORY (or FILE.py:FACTORY). FACTORY() is called with no
arguments and returns a torch.nn.Module, or a tuple (model, x, y) with a batch
to diagnose on. For a bare model the input is random N(0, 1) of shape
(--batch, *--input-shape) with random labels (one class per output column; a
single output column gets float targets). Without --input-shape the 8x8 digits
are tried, first as rows of 64 pixels, then as (1, 8, 8) images; their labels
are used if the model has 10 outputs.

exit status: 0 diagnosis printed (1 with --fail-on-issue if a problem was
found), 2 bad arguments or a target that cannot be imported, built or run.
"""


class _CliError(Exception):
    pass


def _parse_shape(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be positive integers like 64 or 1,8,8; got {text!r}")
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"shape must be positive integers like 64 or 1,8,8; got {text!r}")
    return shape


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lib.diagnose",
        description="Diagnose the gradient flow of a PyTorch model: one forward/backward pass, a "
                    "per-layer table, and a plain-language verdict (vanishing, exploding, "
                    "saturated, dead, non-finite or healthy) with a suggested fix.",
        epilog=_USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="your model factory, as MODULE:FACTORY or FILE.py:FACTORY")
    p.add_argument("--example", metavar="NAME", help="a built-in example: " + ", ".join(_EXAMPLES))
    p.add_argument("--list", action="store_true", help="list the built-in examples and exit")
    p.add_argument("--input-shape", type=_parse_shape, metavar="SHAPE",
                   help="shape of one input example, e.g. 64 or 1,8,8 (random input)")
    p.add_argument("--batch", type=_positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed for examples and random input (default 0)")
    p.add_argument("--fail-on-issue", action="store_true", help="exit with status 1 if a problem is found")
    return p


def _load_factory(target: str) -> Callable[[], Any]:
    mod_name, sep, attr = target.rpartition(":")
    if not sep or not mod_name or not attr:
        raise _CliError(f"target must look like MODULE:FACTORY or FILE.py:FACTORY, got {target!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise _CliError(f"cannot import {mod_name!r}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        loader = spec.loader  # type: ignore[union-attr]
        try:
            loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - report any failure of user code plainly
            raise _CliError(f"cannot import {mod_name!r}: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(mod_name)
        except Exception as exc:  # noqa: BLE001
            raise _CliError(f"cannot import module {mod_name!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _CliError(f"{mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise _CliError(f"{target} is not callable (it is of type {type(obj).__name__}); it must "
                        "name a function or class that builds the model")
    return obj


def _build(factory: Callable[[], Any], what: str) -> tuple[nn.Module, Tensor | None, Tensor | None]:
    try:
        made = factory()
    except Exception as exc:  # noqa: BLE001
        raise _CliError(f"calling {what}() raised {type(exc).__name__}: {exc}") from exc
    if isinstance(made, nn.Module):
        return made, None, None
    if (isinstance(made, tuple) and len(made) == 3 and isinstance(made[0], nn.Module)
            and isinstance(made[1], Tensor) and isinstance(made[2], Tensor)):
        return made
    raise _CliError(f"{what}() must return a torch.nn.Module or a tuple (model, x, y) of a module "
                    f"and two tensors; it returned {type(made).__name__}")


def _try_forward(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, Tensor):
        raise TypeError(f"the model returned a {type(out).__name__}, not a tensor")
    return out


def _random_targets(out: Tensor, gen: torch.Generator) -> tuple[Tensor, str]:
    if out.dim() == 2 and out.shape[1] > 1:
        return torch.randint(0, out.shape[1], (out.shape[0],), generator=gen), \
            f"random labels over {out.shape[1]} classes"
    return torch.randn(out.shape, generator=gen), "random N(0, 1) targets (mean squared error)"


def _make_input(model: nn.Module, shape: tuple[int, ...] | None, batch: int,
                seed: int) -> tuple[Tensor, Tensor, str]:
    # Its own stream: the CLI seeds the user's factory with the same number, and inputs drawn
    # from that very stream would repeat the model's first random numbers (see lib.seeds).
    gen = torch.Generator().manual_seed(_seeds.stream(seed, "cli_input"))
    if shape is not None:
        x = torch.randn((batch, *shape), generator=gen)
        try:
            out = _try_forward(model, x)
        except Exception as exc:  # noqa: BLE001
            raise _CliError(f"the model's forward pass failed on random input of shape "
                            f"{tuple(x.shape)}: {type(exc).__name__}: {exc}") from exc
        y, how = _random_targets(out, gen)
        return x, y, f"random N(0, 1) input {tuple(x.shape)}, {how}"
    d = _digits(seed)
    x0, y0 = d.x_train[:batch], d.y_train[:batch]
    failures = []
    for x in (x0, x0.reshape(-1, 1, 8, 8)):
        try:
            out = _try_forward(model, x)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{tuple(x.shape)}: {type(exc).__name__}: {exc}")
            continue
        if out.dim() == 2 and out.shape == (x.shape[0], 10):
            return x, y0, f"8x8 digits {tuple(x.shape)} with their labels"
        y, how = _random_targets(out, gen)
        return x, y, f"8x8 digits {tuple(x.shape)}, {how}"
    raise _CliError("the model's forward pass failed on the digits input, tried as "
                    + " and as ".join(failures) + ". Give the shape of one example with --input-shape, "
                    "or return (model, x, y) from the factory.")


def _diagnose_cli(model: nn.Module, x: Tensor, y: Tensor) -> Diagnosis:
    if not _probes.layer_modules(model):
        raise _CliError("the model has no layer with a weight (Linear, Conv, ...) to probe")
    try:
        return diagnose_model(model, x, y)
    except ModelError as exc:
        raise _CliError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """The command line, ``python -m lib.diagnose``; returns the exit status.

    * no arguments: diagnose every built-in example (:func:`examples`), one line each;
    * ``--list``: the built-in examples with a one-line description;
    * ``--example NAME``: the per-layer table and diagnosis of one example;
    * ``MODULE:FACTORY`` or ``FILE.py:FACTORY``: your model. ``FACTORY()`` returns an
      ``nn.Module``, or ``(model, x, y)`` with a batch to diagnose on. For a bare
      model, ``--input-shape 3,32,32`` (one example's shape; ``--batch`` sets the
      batch size, default 256) gives random N(0, 1) input and random class labels,
      one class per output column; without it the 8x8 digits are tried as rows of
      64 and then as 1x8x8 images, with their labels if the model has 10 outputs.

    ``--seed`` (default 0) seeds the examples, the factory call and the random
    input. Exit status 0 after a diagnosis (1 with ``--fail-on-issue`` if a problem
    was found) and 2, with a one-line ``error:`` message on stderr, for bad
    arguments, a target that cannot be imported, a missing attribute, a factory
    that raises or does not return a model, or a forward pass that fails.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except _CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise _CliError(f"--seed must be >= 0, got {args.seed}")
    chosen = sum(bool(v) for v in (args.target, args.example, args.list))
    if chosen > 1:
        raise _CliError("give at most one of TARGET, --example and --list")
    if args.list:
        for name, f in _EXAMPLES.items():
            print(f"{name:<16}{(f.__doc__ or '').splitlines()[0]}")
        return 0
    if args.example is not None:
        if args.example not in _EXAMPLES:
            raise _CliError(f"unknown example {args.example!r}; choose one of {', '.join(_EXAMPLES)}")
        model, x, y = _EXAMPLES[args.example](seed=args.seed)
        print(f"example {args.example}: {(_EXAMPLES[args.example].__doc__ or '').splitlines()[0]}")
        print(f"input {tuple(x.shape)}, {'labels' if not y.is_floating_point() else 'targets'} "
              f"{tuple(y.shape)}\n")
        d = _diagnose_cli(model, x, y)
        print(d)
        return 1 if args.fail_on_issue and not d.healthy else 0
    if args.target:
        factory = _load_factory(args.target)
        # Seeded, so an unseeded factory still builds the same weights on every run.
        torch.manual_seed(args.seed)
        model, x, y = _build(factory, args.target)
        if x is None or y is None:
            x, y, how = _make_input(model, args.input_shape, args.batch, args.seed)
        else:
            how = f"the factory's batch, input {tuple(x.shape)}"
        print(f"model {args.target} ({type(model).__name__}), {how}\n")
        d = _diagnose_cli(model, x, y)
        print(d)
        return 1 if args.fail_on_issue and not d.healthy else 0
    # No target: diagnose every built-in example, one line each.
    any_issue = False
    for name, f in _EXAMPLES.items():
        model, x, y = f(seed=args.seed)
        d = _diagnose_cli(model, x, y)
        any_issue |= not d.healthy
        where = ""
        if not d.healthy:
            where = f" in {_span(d.issues[0].layers)} -> read {d.issues[0].chapter}"
        print(f"{name:<16}{'+'.join(d.labels) or 'healthy':<22}{where}")
    print("\nRun `python -m lib.diagnose --example NAME` for the per-layer table, or "
          "`python -m lib.diagnose MODULE:FACTORY` for your own model (--help for details).")
    return 1 if args.fail_on_issue and any_issue else 0


if __name__ == "__main__":
    raise SystemExit(main())
