"""The rows of a probe report: :class:`LayerStats` (one per layer) and
:class:`ParamStats` (one per parameter tensor), and :func:`format_table`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

from lib._checks import check_int
from lib.probes import _moments
from lib.probes._names import abbreviate, role
from lib.probes.layers import fan_in, own_parameters, plain_weight, weight_groups

if TYPE_CHECKING:
    from lib.probes._state import _Slot
    from lib.probes.recorder import Recorder

__all__ = ["LayerStats", "ParamStats", "format_table", "layer_row", "layer_rows"]

_NAN = math.nan
#: the allowed range of a LayerStats number where it is not [0, inf) (NaN: not measured)
_RANGES = {"pre_mean": (-math.inf, math.inf), "act_mean": (-math.inf, math.inf),
           "saturated": (0.0, 1.0), "dead": (0.0, 1.0), "time_grad_ratio": (0.0, 1.0)}


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
    #: values each unit's activation was seen with (batch x positions, pooled over calls)
    unit_samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, where: str = "row") -> "LayerStats":
        """This row if every field has its type and range, else TypeError/ValueError
        naming ``where`` and the field (for hand-made rows given to the diagnosis)."""
        for f in ("name", "kind", "role"):
            if not isinstance(getattr(self, f), str):
                raise TypeError(f"{where}.{f} must be a str, got "
                                f"{type(getattr(self, f)).__name__}")
        if self.activation is not None and not isinstance(self.activation, str):
            raise TypeError(f"{where}.activation must be a str or None, got "
                            f"{type(self.activation).__name__}")
        for f in ("nonfinite", "feeds_norm", "frozen", "first_nonfinite"):
            if not isinstance(getattr(self, f), (bool, np.bool_)):
                raise TypeError(f"{where}.{f} must be a bool, got "
                                f"{type(getattr(self, f)).__name__}")
        for f in ("fan_in", "calls", "numel", "unit_samples"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise (ValueError if isinstance(v, (int, np.integer)) else TypeError)(
                    f"{where}.{f} must be an int >= 0, got {v!r}")
        for f in ("pre_mean", "pre_std", "act_mean", "act_std", "saturated", "dead",
                  "weight_grad_norm", "output_grad_norm", "weight_norm", "time_grad_ratio"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise TypeError(f"{where}.{f} must be a real number (NaN for none), got "
                                f"{type(v).__name__}")
            low, high = _RANGES.get(f, (0.0, math.inf))
            if not math.isnan(v) and not low <= v <= high:
                raise ValueError(f"{where}.{f} must lie in [{low:g}, {high:g}] or be NaN, "
                                 f"got {v!r}")
        if not isinstance(self.tied, tuple):
            raise TypeError(f"{where}.tied must be a tuple of names, got "
                            f"{type(self.tied).__name__}")
        return self


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
    for i, r in enumerate(rows):
        r.check(f"rows[{i}]")
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
        got = tg[tg > 0]  # steps with no gradient at all (padding) are not on the path
        ratio = float(got.min() / got.max()) if got.numel() else _NAN
    rl = "weight"
    w = plain_weight(s.module) if s.weight_used is None else s.weight_used
    if isinstance(w, Tensor):
        rl = role(s.name, s.module, "weight")
        if tied_embedding:
            rl = "embedding"  # tied to an embedding: not judged as a Linear's gain
    elif isinstance(s.module, nn.MultiheadAttention):
        rl = "qkv"
    elif isinstance(s.module, nn.RNNBase):
        rl = "recurrent"
    row = LayerStats(s.name + suffix, s.kind, s.activation if show else None, pm, ps, am,
                     as_, sat, dead, wg, og, bool(nonfinite), wn, fan_in(s.module, w),
                     s.calls, rl, s.feeds_norm, frozen, tied, ratio,
                     first is not None and s.nonfinite_at == first)
    row.unit_samples = s.unit_samples if show and s.act.n else 0
    return row


def layer_rows(rec: "Recorder") -> list[LayerStats]:
    """One :class:`LayerStats` per layer that ran, in forward order (:meth:`Recorder.report`)."""
    first = min((s.nonfinite_at for s in rec._order if s.nonfinite_at is not None),
                default=None)
    rows: list[LayerStats] = []
    ran = {id(s) for s in rec._order}
    silent = [s for s in rec._slots if id(s) not in ran]
    order: list[_Slot] = []
    for s in rec._order:
        order.append(s)
        # A child layer its parent uses without calling it (MultiheadAttention.out_proj),
        # also in a forward-only block, where no gradient shows it took part.
        prefix = f"{s.name}." if s.name else ""
        order += [c for c in silent if c.name.startswith(prefix) and c is not s
                  and (isinstance(s.module, nn.MultiheadAttention)
                       or any(rec._pgrad[id(p)].passes
                              for p in own_parameters(c.module).values()))]
    for s in order:
        own = own_parameters(s.module)
        groups = weight_groups(s.module, own)
        for suffix, names in groups:
            pids = [id(own[n]) for n in names]
            gs = [rec._pgrad[i] for i in pids if i in rec._pgrad]
            sq = [g.norm() ** 2 for g in gs if g.passes]
            wg = math.sqrt(sum(sq)) if sq else _NAN
            wn = math.sqrt(sum(_moments.sum_squares(own[n]) for n in names))
            numel = sum(own[n].numel() for n in names)
            if s.weight_used is not None and names[0].startswith("parametrizations.weight."):
                # the weight the layer used (its originals are what the optimiser moves)
                wn, numel = _moments.norm(s.weight_used), s.weight_used.numel()
            frozen = not any(own[n].requires_grad for n in names)
            tied = tuple(a for i in pids for a in rec._aliases.get(i, [])
                         if not a.startswith(f"{s.name}.") and a.rsplit(".", 1)[0] != s.name)
            bad = any(g.bad for g in gs)
            w = plain_weight(s.module)
            tied_emb = isinstance(w, Tensor) and id(w) in rec._params \
                and rec._params[id(w)][2] == "embedding"
            row = layer_row(s, suffix, wg, wn, frozen, tied, first, len(groups) > 1,
                            suffix == groups[-1][0], bad, tied_emb)
            row.numel = numel
            rows.append(row)
    return rows
