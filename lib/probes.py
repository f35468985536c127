"""Gradient-flow probes for any ``nn.Module``, through hooks.

Usage::

    with lib.probes.watch(model) as rec:
        loss = loss_fn(model(x), y)
        loss.backward()
    for row in rec.report():
        print(row.name, row.weight_grad_norm, row.dead)
    print(rec.table())

A *layer* is a leaf module with a ``weight`` (Linear, Conv, ...), not a
normalisation or activation module. Its *pre-activation* is the input of the
first activation module that runs after it (so after a BatchNorm, if there is
one), and its *activation* is that module's output. A layer with no activation
module after it (an output layer, or a model that calls ``F.relu``) reports the
layer's own output as pre-activation and NaN for the activation columns.

Forward statistics are pooled over every forward pass inside the ``with``
block; gradient norms are those of the last backward pass. Hooks are removed
when the block ends, also when it raises.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from lib import activations as _acts

__all__ = ["LayerStats", "Recorder", "watch", "layer_modules", "SATURATION", "hidden_outputs",
           "jacobian_singular_values", "active_fraction", "dead_units"]

#: |pre-activation| beyond which a bounded activation counts as saturated: there
#: its derivative is below 5 % of its maximum (sigmoid: 0.25 -> 0.0125; tanh: 1 -> 0.05).
SATURATION: dict[str, float] = {"sigmoid": 4.35, "tanh": 2.18}

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

#: Activation modules whose output is never negative: a unit of theirs with a zero
#: sum is all zeros, so the per-unit sums alone find the dead units.
_NONNEGATIVE = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid)


@dataclass
class LayerStats:
    """One row of a probe report (one weight layer, in forward order)."""

    name: str
    kind: str
    activation: str | None
    pre_mean: float
    pre_std: float
    act_mean: float
    act_std: float
    saturated: float
    dead: float
    weight_grad_norm: float
    output_grad_norm: float
    nonfinite: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs a probe reports on: leaf modules with a ``weight``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = []
    for name, m in model.named_modules():
        if any(True for _ in m.children()):
            continue
        w = getattr(m, "weight", None)
        if not isinstance(w, Tensor) or isinstance(m, _NORM_TYPES):
            continue
        if isinstance(m, _acts.ACTIVATION_MODULES):
            continue
        out.append((name, m))
    return out


class _Moments:
    """Running count, sum and sum of squares of every entry seen.

    Per pass: two float32 reductions, kept as Python floats (the range check of
    the squares converts anyway; 0-d tensors kept until the report would only be
    extra live objects to convert again there); they are added up in float64
    once per report. A NaN or Inf anywhere shows in the sums.
    """

    def __init__(self) -> None:
        self.n = 0
        self._s: list[float] = []
        self._ss: list[float] = []
        self._sums: tuple[float, float] | None = None  # (sum, sum of squares), until the next add

    def add(self, t: Tensor, total: Tensor | None = None) -> None:
        """Add every entry of ``t``; ``total`` is their sum if the caller has it already."""
        flat = t.detach().reshape(-1)
        self.n += flat.numel()
        self._sums = None
        squares = float(torch.dot(flat, flat))
        if not _SAFE_SQUARES[0] < squares < _SAFE_SQUARES[1]:
            # float32 squares underflow or overflow: redo this pass in float64 (see _SAFE_SQUARES).
            d = flat.double()
            total, squares = d.sum(), float(torch.dot(d, d))
        elif total is None:
            total = flat.sum()
        self._s.append(float(total))
        self._ss.append(squares)

    def add_with_units(self, t: Tensor, nonnegative: bool = False) -> Tensor:
        """Add ``t`` (batch, units, ...) and return which units have a nonzero entry.

        Two read-only passes, no batch-sized temporary: the per-unit sums (their
        total is the sum) and a dot product. A unit with a nonzero sum has a
        nonzero entry. A zero sum means all zeros when ``t`` is never negative
        (``nonnegative``); otherwise entries might cancel, and the units' largest
        and smallest entries decide.
        """
        t = t.detach()
        if t.dim() == 0:
            self.add(t)
            return (t != 0).reshape(1)
        if t.numel() == 0:  # no entry, so no unit is nonzero
            self.add(t)
            return torch.zeros(t.shape[1:2], dtype=torch.bool)
        dims = [0] + list(range(2, t.dim()))
        per_unit = t.sum(dim=dims)
        self.add(t, total=per_unit.sum())
        alive = per_unit != 0
        if not nonnegative and not bool(alive.all()):
            alive = torch.logical_or(t.amax(dim=dims), t.amin(dim=dims))
        return alive

    def _totals(self) -> tuple[float, float]:
        # A report asks each moment twice (finite, mean_std): add up once, in float64.
        # Not math.fsum: it raises on inf + -inf, where a probe must report NaN.
        if self._sums is None:
            self._sums = (sum(self._s), sum(self._ss))
        return self._sums

    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self._totals())

    def mean_std(self) -> tuple[float, float]:
        if self.n == 0:
            return math.nan, math.nan
        s, ss = self._totals()
        m = s / self.n
        return m, math.sqrt(max(ss / self.n - m * m, 0.0))


#: Sums of squares that float32 holds accurately. Outside this range squares of
#: float32 entries underflow (entries below ~1e-19, a vanishing gradient) or
#: overflow to inf (entries above ~1e19, an exploding one), which are the very
#: regimes a probe exists to measure; there the computation is redone in float64.
_SAFE_SQUARES = (1e-30, 1e30)


def _norm(t: Tensor) -> float:
    """Euclidean norm of ``t``: float32 where that is exact enough, float64 where it is not."""
    flat = t.detach().reshape(-1)
    squares = float(torch.dot(flat, flat))
    if _SAFE_SQUARES[0] < squares < _SAFE_SQUARES[1]:
        return math.sqrt(squares)
    return float(torch.linalg.vector_norm(flat, dtype=torch.float64))


class _Slot:
    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.kind = type(module).__name__
        self.activation: str | None = None
        self.pre = _Moments()
        self.act = _Moments()
        self.out = _Moments()
        self.pending: Tensor | None = None  # last output, until we know whether an activation follows
        self.sat_count = 0
        self.sat_total = 0
        self.alive: Tensor | None = None  # per unit: ever nonzero?
        self.out_grad_norm = math.nan  # of the last backward pass
        self.paired = False
        self.samples: dict[str, list[Tensor]] = {"pre": [], "act": [], "grad": []}


class Recorder:
    """Collects per-layer statistics while attached; see :func:`watch`."""

    def __init__(self, model: nn.Module, keep_samples: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(keep_samples, bool) or not isinstance(keep_samples, int) or keep_samples < 0:
            raise ValueError(f"keep_samples must be an int >= 0, got {keep_samples!r}")
        self.model = model
        self.keep_samples = keep_samples
        self._slots = [_Slot(n, m) for n, m in layer_modules(model)]
        self._by_module = {id(s.module): s for s in self._slots}
        self._order: list[_Slot] = []  # forward order, first pass
        self._ordered: set[int] = set()  # id() of the slots in _order
        self._act_names: dict[int, str] = {}  # id(activation module) -> its name, set by attach
        self._last: _Slot | None = None
        self._handles: list[Any] = []
        self._active = False

    # -- hooks ---------------------------------------------------------------
    def _layer_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not self._active or not isinstance(output, Tensor):
            return
        slot = self._by_module[id(module)]
        if id(slot) not in self._ordered:
            self._ordered.add(id(slot))
            self._order.append(slot)
        self._flush(slot)
        slot.pending = output.detach()
        slot.paired = False
        self._last = slot
        if output.requires_grad:
            output.register_hook(lambda g, s=slot: self._grad_hook(s, g))

    @staticmethod
    def _flush(slot: _Slot) -> None:
        """Count the previous output of an unpaired layer (no activation followed it)."""
        if slot.pending is not None and not slot.paired:
            slot.out.add(slot.pending)
        slot.pending = None

    def _grad_hook(self, slot: _Slot, grad: Tensor) -> None:
        if not self._active:
            return
        slot.out_grad_norm = _norm(grad)
        if self.keep_samples:
            slot.samples["grad"] = [self._sample(grad)]

    def _act_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        slot = self._last
        if not self._active or slot is None or slot.paired or not isinstance(output, Tensor):
            return
        slot.paired = True
        slot.pending = None
        self._last = None
        z = inputs[0] if isinstance(inputs, tuple) and inputs else None
        if not isinstance(z, Tensor):
            return
        slot.activation = self._act_names[id(module)]
        slot.pre.add(z)
        # A unit is alive if any of its outputs is nonzero.
        alive = slot.act.add_with_units(output, isinstance(module, _NONNEGATIVE))
        thr = SATURATION.get(slot.activation or "")
        if thr is not None:
            slot.sat_count = slot.sat_count + (z.detach().abs() > thr).sum()
            slot.sat_total += z.numel()
        slot.alive = alive if slot.alive is None or slot.alive.shape != alive.shape else slot.alive | alive
        if self.keep_samples:
            slot.samples["pre"].append(self._sample(z))
            slot.samples["act"].append(self._sample(output))

    def _sample(self, t: Tensor) -> Tensor:
        flat = t.detach().reshape(-1)
        return flat[: self.keep_samples].clone()

    # -- lifecycle -------------------------------------------------------------
    def attach(self) -> "Recorder":
        if self._active:
            raise RuntimeError("this recorder is already attached")
        self._active = True
        for s in self._slots:
            self._handles.append(s.module.register_forward_hook(self._layer_hook))
        for m in self.model.modules():
            if isinstance(m, _acts.ACTIVATION_MODULES):
                self._act_names[id(m)] = _acts.name_of_module(m) or type(m).__name__
                self._handles.append(m.register_forward_hook(self._act_hook))
        return self

    def detach(self) -> None:
        self._active = False
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def hook_count(self) -> int:
        """How many module hooks are attached right now (0 after the ``with`` block)."""
        return len(self._handles)

    # -- results ---------------------------------------------------------------
    def report(self) -> list[LayerStats]:
        """One :class:`LayerStats` per layer that ran, in forward order."""
        rows = []
        for s in self._order:
            self._flush(s)
            w = getattr(s.module, "weight", None)
            g = w.grad if isinstance(w, Tensor) else None
            wg = _norm(g) if g is not None else math.nan
            og = s.out_grad_norm
            nonfinite = not (s.out.finite() and s.pre.finite() and s.act.finite()) or (
                g is not None and not math.isfinite(wg)) or (not math.isnan(og) and not math.isfinite(og))
            if s.act.n:
                pm, ps = s.pre.mean_std()
                am, as_ = s.act.mean_std()
                # Counted exactly: the float32 mean of a 0/1 mask rounds k / n to float32.
                units = s.alive.numel() if s.alive is not None else 0
                dead = (units - int(s.alive.sum())) / units if units else math.nan
            else:
                (pm, ps), (am, as_), dead = s.out.mean_std(), (math.nan, math.nan), math.nan
            if s.sat_total:
                sat = float(s.sat_count) / s.sat_total
            else:
                sat = math.nan
            rows.append(LayerStats(s.name, s.kind, s.activation, pm, ps, am, as_, sat, dead, wg,
                                   og, nonfinite))
        return rows

    def samples(self, name: str) -> dict[str, Tensor]:
        """Kept values (``keep_samples`` > 0) of layer ``name``: pre, act and grad."""
        for s in self._slots:
            if s.name == name:
                return {k: torch.cat(v) if v else torch.empty(0) for k, v in s.samples.items()}
        raise ValueError(f"no layer named {name!r}; layers: {', '.join(s.name for s in self._slots)}")

    def column(self, field: str) -> list[float]:
        """One column of the report, e.g. ``rec.column('weight_grad_norm')``."""
        valid = [f.name for f in fields(LayerStats)]
        if field not in valid:
            raise ValueError(f"unknown column {field!r}; columns: {', '.join(valid)}")
        return [getattr(r, field) for r in self.report()]

    def table(self) -> str:
        """The report as a fixed-width text table."""
        return format_table(self.report())


def format_table(rows: list[LayerStats]) -> str:
    """A fixed-width text table of report rows."""
    message = "rows must be a list of LayerStats, as Recorder.report() returns"
    if isinstance(rows, (str, bytes)):
        raise TypeError(message)
    try:
        rows = list(rows)  # a generator is read once, here
    except TypeError:
        raise TypeError(message) from None
    if not all(isinstance(r, LayerStats) for r in rows):
        raise TypeError(message)
    head = (f"{'layer':<16}{'act':<11}{'pre std':>9}{'act std':>9}{'sat':>7}{'dead':>7}"
            f"{'|dL/dW|':>11}{'|dL/dout|':>11}  nan/inf")
    lines = [head, "-" * len(head)]

    def f(v: float, spec: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
            return "-".rjust(width)
        return format(v, spec)

    for r in rows:
        lines.append(
            f"{r.name[:15]:<16}{(r.activation or '-')[:10]:<11}{f(r.pre_std, '9.3g')}"
            f"{f(r.act_std, '9.3g')}{f(r.saturated, '7.0%')}{f(r.dead, '7.0%')}"
            f"{f(r.weight_grad_norm, '11.2e')}{f(r.output_grad_norm, '11.2e')}  "
            f"{'YES' if r.nonfinite else 'no'}"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def watch(model: nn.Module, *, keep_samples: int = 0) -> Iterator[Recorder]:
    """Attach probes to ``model`` for the duration of the block.

    ``keep_samples`` > 0 keeps up to that many raw values per layer and pass
    (pre-activations, activations, output gradients) for histograms.
    """
    rec = Recorder(model, keep_samples=keep_samples)
    rec.attach()
    try:
        yield rec
    finally:
        rec.detach()


def gradient_norms(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Any = None) -> list[float]:
    """Weight-gradient norm of every layer after one forward/backward pass on (x, y).

    A convenience for the many experiments that only need this column. The
    model's existing ``.grad`` fields are cleared first and left holding the result.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch.Tensors")
    loss_fn = loss_fn or (nn.functional.cross_entropy if not y.is_floating_point()
                          else nn.functional.mse_loss)
    model.zero_grad(set_to_none=True)
    with watch(model) as rec:
        loss = loss_fn(model(x), y)
        loss.backward()
    return rec.column("weight_grad_norm")


def hidden_outputs(model: nn.Module, x: Tensor) -> list[tuple[str, Tensor]]:
    """(name, output) of every top-level child of a sequential ``model`` on the batch ``x``.

    For a :class:`lib.networks.MLP` these are each hidden layer's activations (or,
    with ``residual=True``, the residual stream after each block) and last the
    output layer's logits: the forward signal, layer by layer. Runs without
    gradients, in the model's current mode; in train mode a BatchNorm layer
    updates its running statistics, as in any forward pass.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"hidden_outputs needs an nn.Sequential (e.g. lib.networks.mlp), "
                        f"got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor batch")
    outs = []
    h = x
    with torch.no_grad():
        for name, module in model.named_children():
            h = module(h)
            outs.append((name, h))
    return outs


def jacobian_singular_values(module: nn.Module, x: Tensor) -> Tensor:
    """Singular values, largest first, of the input-output Jacobian of ``module`` at one input.

    The Jacobian ``d module(x) / d x`` of a stack of layers is the product of the
    per-layer Jacobians ``D_l W_l``; its singular values say how much the stack
    stretches or shrinks each input direction (the gradient flows back through
    its transpose, so the same numbers apply backwards). ``x`` is one input, of
    shape ``(features,)`` or ``(1, features)``; the output may have any shape and
    is flattened. Runs in the module's current mode and dtype: convert a deep
    stack to float64 (``module.double()``), as its smallest singular values fall
    below float32 precision within a few tens of layers. For a
    :class:`lib.networks.MLP` ``model``, ``model[:-1]`` is the stack of hidden layers.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"x must be one input of shape (features,) or (1, features), "
                         f"got shape {tuple(x.shape)}")
    # One backward pass per output: vectorize=True would import sympy (~0.4 s) for no gain here.
    jac = torch.autograd.functional.jacobian(lambda v: module(v.unsqueeze(0)).reshape(-1),
                                             x.detach(), vectorize=False)
    return torch.linalg.svdvals(jac.detach())


def active_fraction(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Per layer and per unit, the fraction of the inputs in ``x`` with pre-activation > 0.

    Keys are the layer names of :func:`layer_modules` (``"layer3.linear"``), in
    forward order, for every layer followed by an activation module; values are
    float64 tensors with one entry per unit (per channel for a Conv layer,
    pooled over positions). The pre-activation is the input of that activation
    module, as in :func:`watch`. A ReLU unit whose fraction is 0 is a *dead unit*
    on ``x``: it outputs 0 for every input, so no gradient passes it. For the
    sign-preserving variants (Leaky ReLU, ELU, SELU, SiLU, GELU) a 0 means the
    unit sits in its negative region on every input, without being dead.
    Runs one forward pass without gradients, in the model's current mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor batch")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (batch, ...), got {tuple(x.shape)}")
    layers = layer_modules(model)
    names = {id(m): n for n, m in layers}
    last: list[str | None] = [None]
    out: dict[str, Tensor] = {}

    def on_layer(module: nn.Module, inputs: Any, output: Any) -> None:
        last[0] = names[id(module)]

    def on_act(module: nn.Module, inputs: Any, output: Any) -> None:
        name, last[0] = last[0], None
        z = inputs[0] if isinstance(inputs, tuple) and inputs else None
        # Only the first activation after a layer counts, and only on its first pass.
        if name is None or name in out or not isinstance(z, Tensor) or z.dim() < 2:
            return
        positive = (z.detach() > 0).to(torch.float64)
        out[name] = positive.mean(dim=[0] + list(range(2, z.dim())))

    handles = [m.register_forward_hook(on_layer) for _, m in layers]
    handles += [m.register_forward_hook(on_act) for m in model.modules()
                if isinstance(m, _acts.ACTIVATION_MODULES)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def dead_units(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Per layer, a boolean mask of the units whose pre-activation is <= 0 on every input in ``x``.

    For ReLU these are the dead units (output 0 and zero gradient on all of
    ``x``); see :func:`active_fraction`, which this thresholds at 0.
    """
    return {name: frac == 0 for name, frac in active_fraction(model, x).items()}
