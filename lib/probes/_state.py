"""Per-layer accumulators and the function mode that sees functional activations
(internal to :mod:`lib.probes.recorder`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from lib.activations import kinds as _kinds
from lib.probes import _moments

if TYPE_CHECKING:
    from lib.probes.recorder import Recorder

_NAN = math.nan


def backward_id() -> int:
    """The id of the backward pass running now (autograd's graph task), -1 outside one.

    Each ``backward()`` call is its own task, also a second one through a
    retained graph; a forward pass recomputed during backward (activation
    checkpointing) runs inside one.
    """
    return int(torch._C._current_graph_task_id())


def step_norms(x: Any, batch_first: bool) -> Callable[[Tensor], Tensor]:
    """For a recurrent layer's input ``x``: a function from dL/dx to its norm per time step.

    ``x`` is a padded tensor (time first, or second with ``batch_first``) or a
    ``PackedSequence`` (time-major, ``batch_sizes[t]`` rows for step t).
    """
    if isinstance(x, PackedSequence):
        sizes = [int(b) for b in x.batch_sizes]

        def packed(g: Tensor) -> Tensor:
            rows = g.detach().double().pow(2).sum(dim=tuple(range(1, g.dim())))
            return torch.stack([c.sum() for c in rows.split(sizes)]).sqrt()
        return packed
    time_dim = 1 if batch_first and x.dim() == 3 else 0
    dims = [d for d in range(x.dim()) if d != time_dim]

    def padded(g: Tensor) -> Tensor:
        return g.detach().double().pow(2).sum(dim=dims).sqrt().reshape(-1)
    return padded


class _Grad:
    """Per-pass sums of squares of one gradient; reports their RMS norm.

    A pass is one backward pass (one ``backward()`` or ``autograd.grad`` call):
    two calls through one retained graph are two passes, not one gradient
    whose squares add up; several forward passes whose summed loss is
    backpropagated once are one, for a layer's output gradient as for its
    weight gradient. ``pass_id`` (the forward pass) is the key only outside
    a backward pass.
    """

    __slots__ = ("passes", "bad")

    def __init__(self) -> None:
        self.passes: dict[int, float] = {}
        self.bad = False  # a NaN/Inf entry was seen (NaN norm *with* a gradient recorded)

    def add(self, pass_id: int, squares: float) -> None:
        task = backward_id()
        key = task if task != -1 else -1 - pass_id
        self.passes[key] = self.passes.get(key, 0.0) + squares
        self.bad |= not math.isfinite(squares)

    def norm(self) -> float:
        if not self.passes:
            return _NAN
        return math.sqrt(sum(self.passes.values()) / len(self.passes))


class _Slot:
    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module, self.kind = name, module, type(module).__name__
        self.activation: str | None = None
        self.pre, self.act, self.out = _moments.Moments(), _moments.Moments(), _moments.Moments()
        self.sat_count, self.sat_total = 0, 0
        self.alive: Tensor | None = None
        self.unit_samples = 0  # values per unit behind ``alive``
        # (id, version, sums) of the layer's last output: the activation's input when it is
        # that very tensor, unchanged, so its sums need not be taken twice
        self.out_batch: tuple[int, int | None, Any] | None = None
        self.weight_used: Tensor | None = None  # a parametrised weight, as last computed
        # per unit, how many pre-activations were > 0 (Recorder.count_positive), of how many
        self.positive: Tensor | None = None
        self.positive_n = 0
        self.out_grad = _Grad()
        self.calls = 0
        self.paired_now = False
        self.feeds_norm = False
        self.nonfinite = False
        self.nonfinite_at: int | None = None  # forward call index of the first NaN/Inf output
        # dL/dx_t norms per forward pass and call: {pass: {call: (steps,)}}; a
        # layer called step by step (a decoder loop) has one call per step
        self.time_parts: dict[int, dict[int, Tensor]] = {}
        self.time_calls: tuple[int, int] = (0, 0)  # (pass, calls so far in it)
        self.samples: dict[str, list[Tensor]] = {"pre": [], "act": [], "grad": []}

    def time_call(self, pass_id: int) -> int:
        """Register one call of this recurrent layer in pass ``pass_id``; its index there."""
        p, n = self.time_calls
        n = n if p == pass_id else 0
        self.time_calls = (pass_id, n + 1)
        for old in [q for q in self.time_parts if q < pass_id - 1]:
            del self.time_parts[old]  # keep the last two passes' gradients only
        return n

    @property
    def time_grads(self) -> Tensor | None:
        """The latest pass's per-step gradient norms, its calls' steps in call order."""
        for p in sorted(self.time_parts, reverse=True):
            parts = self.time_parts[p]
            if parts:
                return torch.cat([parts[k] for k in sorted(parts)])
        return None


#: Recorders attached right now; the patched activation functions report to them.
_ACTIVE: list["Recorder"] = []
_PATCHES: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)
_DEPTH = [0]  # > 0 while inside a patched call (its own inner calls are not activations)


def _owners(func: Any) -> list[tuple[Any, str]]:
    name = getattr(func, "__name__", None)
    found = []
    for owner in (torch, torch.nn.functional, torch.Tensor):
        if name and getattr(owner, name, None) is func:
            found.append((owner, name))
    return found


def _wrap(func: Any, kind: _kinds.Kind) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _DEPTH[0] or not args or not isinstance(args[0], Tensor):
            return func(*args, **kwargs)
        recs = [r for r in _ACTIVE if r._in_forward and not r._in_act]
        if not recs:
            return func(*args, **kwargs)
        for r in recs:
            r._pre(kind, args[0])
        _DEPTH[0] += 1
        try:
            out = func(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
        for r in recs:
            if isinstance(out, Tensor):
                r._post(kind, out)
        return out

    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(func, "__name__", "activation")
    wrapper.__doc__ = getattr(func, "__doc__", None)
    return wrapper


def functional_on(rec: "Recorder") -> None:
    """Start reporting functional activation calls to ``rec`` (patches them on first use).

    Only the registered functions are replaced, by thin wrappers, and only while
    some recorder is attached: calls looked up at call time (``F.relu(x)``,
    ``torch.tanh(x)``, ``x.relu()``) are seen; a function bound earlier by
    ``from torch.nn.functional import relu`` is not.
    """
    if not _ACTIVE:
        for kind in _kinds.kinds().values():
            for func in kind.functions:
                for owner, name in _owners(func):
                    _PATCHES.append((owner, name, func))
                    setattr(owner, name, _wrap(func, kind))
    _ACTIVE.append(rec)


def functional_off(rec: "Recorder") -> None:
    if rec in _ACTIVE:
        _ACTIVE.remove(rec)
    if not _ACTIVE:
        while _PATCHES:
            owner, name, func = _PATCHES.pop()
            setattr(owner, name, func)


def rnn_input_hook(rec: "Recorder", module: nn.Module, args: Any) -> Any:
    """The recorder's forward pre-hook on a recurrent layer: makes autograd compute
    dL/dx_t of its input and records its norm per time step (see :func:`step_norms`)."""
    x = args[0] if args else None
    packed = isinstance(x, PackedSequence)
    data = x.data if packed else x
    if not rec._active or not isinstance(data, Tensor) or not data.is_floating_point() \
            or not torch.is_grad_enabled() or backward_id() != -1:
        return None
    if not data.requires_grad:
        data = data.detach().requires_grad_(True)  # so autograd computes dL/dx_t
        x = x._replace(data=data) if packed else data
    slot = rec._by_module[id(module)]
    p = rec._pass
    call = slot.time_call(p)
    per_step = step_norms(x, getattr(module, "batch_first", False))

    def on_grad(g: Tensor) -> None:
        if rec._active:
            slot.time_parts.setdefault(p, {})[call] = per_step(g)

    data.register_hook(on_grad)
    return (x,) + tuple(args[1:])
