"""The rows of a probe report: :class:`LayerStats` (one per layer) and
:class:`ParamStats` (one per parameter tensor), and :func:`format_table`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from lib._checks import check_int
from lib.probes._names import abbreviate, role
from lib.probes.layers import fan_in

if TYPE_CHECKING:
    from lib.probes._state import _Slot

__all__ = ["LayerStats", "ParamStats", "format_table", "layer_row"]

_NAN = math.nan


@dataclass
class LayerStats:
    """One row of a probe report: one layer (or one layer and direction of an RNN)."""

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
    weight_norm: float = _NAN
    fan_in: int = 0
    calls: int = 0
    role: str = "weight"
    feeds_norm: bool = False
    frozen: bool = False
    tied: tuple[str, ...] = ()
    time_grad_ratio: float = _NAN
    first_nonfinite: bool = False
    numel: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParamStats:
    """One parameter tensor: its owner, role, size, norm and gradient norm."""

    name: str
    owner: str
    role: str
    shape: tuple[int, ...]
    numel: int
    requires_grad: bool
    weight_norm: float
    grad_norm: float
    grad_passes: int
    nonfinite: bool
    tied: tuple[str, ...] = ()


def format_table(rows: Any, width: int = 24) -> str:
    """A fixed-width text table of report rows; module paths abbreviated from the left."""
    message = "rows must be a list of LayerStats, as Recorder.report() returns"
    if isinstance(rows, (str, bytes)):
        raise TypeError(message)
    try:
        rows = list(rows)
    except TypeError:
        raise TypeError(message) from None
    if not all(isinstance(r, LayerStats) for r in rows):
        raise TypeError(message)
    width = check_int(width, "width", ge=8)
    names = abbreviate([r.name for r in rows], width)
    w = max([len(n) for n in names] + [5]) + 1
    head = (f"{'layer':<{w}}{'act':<9}{'pre std':>9}{'act std':>9}{'sat':>6}{'dead':>6}"
            f"{'|dL/dW|':>10}{'|dL/dout|':>10}  nan")
    lines = [head, "-" * len(head)]

    def f(v: float, spec: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-".rjust(int(spec.split(".")[0]))
        return format(v, spec)

    for n, r in zip(names, rows):
        mark = "YES" if r.nonfinite else "no"
        lines.append(f"{n:<{w}}{(r.activation or '-')[:8]:<9}{f(r.pre_std, '9.3g')}"
                     f"{f(r.act_std, '9.3g')}{f(r.saturated, '6.0%')}{f(r.dead, '6.0%')}"
                     f"{f(r.weight_grad_norm, '10.2e')}{f(r.output_grad_norm, '10.2e')}  {mark}"
                     + (" (tied)" if r.tied else ""))
    return "\n".join(lines)


def layer_row(s: _Slot, suffix: str, wg: float, wn: float, frozen: bool,
              tied: tuple[str, ...], first: int | None, split: bool, top: bool,
              bad_grad: bool, tied_embedding: bool) -> LayerStats:
    """The report row of one layer (``suffix``: one layer and direction of an RNN)
    from its accumulators ``s`` and the weight figures the recorder computed."""
    # An RNN's output is its top layer's: the forward columns go on that row only.
    show = top or not split
    if s.act.n and show:
        pm, ps = s.pre.mean_std()
        am, as_ = s.act.mean_std()
        units = s.alive.numel() if s.alive is not None else 0
        dead = (units - int(s.alive.sum())) / units if units else _NAN
    elif show:
        (pm, ps), (am, as_), dead = s.out.mean_std(), (_NAN, _NAN), _NAN
    else:
        pm = ps = am = as_ = dead = _NAN
    sat = s.sat_count / s.sat_total if s.sat_total and show else _NAN
    og = s.out_grad.norm() if show else _NAN
    nonfinite = s.nonfinite or (show and s.out_grad.bad) or not math.isfinite(wn) or bad_grad
    ratio = _NAN
    tg = s.time_grads
    if tg is not None and show:
        ratio = float(tg.min() / tg.max()) if float(tg.max()) > 0 else _NAN
    rl = "weight"
    w = getattr(s.module, "weight", None)
    if isinstance(w, Tensor):
        rl = role(s.name, s.module, "weight")
        if tied_embedding:
            rl = "embedding"  # tied to an embedding: not judged as a Linear's gain
    elif isinstance(s.module, nn.MultiheadAttention):
        rl = "qkv"
    elif isinstance(s.module, nn.RNNBase):
        rl = "recurrent"
    return LayerStats(s.name + suffix, s.kind, s.activation if show else None, pm, ps, am,
                      as_, sat, dead, wg, og, bool(nonfinite), wn, fan_in(s.module),
                      s.calls, rl, s.feeds_norm, frozen, tied, ratio,
                      first is not None and s.nonfinite_at == first)
