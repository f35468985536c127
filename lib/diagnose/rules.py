r"""The rules: from a probe report to a verdict per layer and for the model.

Every gradient criterion is *relative*, so it does not depend on the size of
the layers, on a sum- or mean-reduced loss, or on the learning rate. The
reference is the top of the network's body, row :math:`r`: the last layer
before the output layer (in forward order) that the rule applies to. For a
layer :math:`l` with weight :math:`W_l`, output gradient
:math:`\delta_l = \partial L/\partial h_l` and weight gradient :math:`g_l`:

.. math::

    s_l = \frac{\lVert\delta_l\rVert}{\lVert\delta_r\rVert} \quad\text{(backward signal)},
    \qquad
    u_l = \frac{\lVert g_l\rVert / \lVert W_l\rVert}{\lVert g_r\rVert / \lVert W_r\rVert}
    \quad\text{(relative update size under SGD)},
    \qquad
    \gamma_l = \frac{\lVert W_l\rVert}{\sqrt{\mathrm{numel}(W_l)}}\sqrt{\mathrm{fan\_in}_l}
    \quad\text{(gain)}.

Both ratios cancel a loss's scale (sum versus mean) and the learning rate. The
output layer is the top's reference, not judged by them.

* **non-finite** - NaN/Inf in the forward pass, traced to the first layer that
  produced it (and the parameters that hold it); NaN only in the backward pass,
  to the last layer in forward order whose gradient holds it.
* **no-gradient** - trainable layers that received no gradient (no backward
  pass in the probe, ``torch.no_grad``, or layers the loss does not use).
* **exploding** - :math:`s_l` or :math:`u_l` above ``exploding_ratio``.
* **dead** / **saturated** - more than ``dead_fraction`` of a layer's units
  output zero on the whole batch / more than ``saturated_fraction`` of its
  bounded activation's inputs lie where the derivative is below 5 % of its peak.
  Dead units are judged only where each unit saw ``dead_min_samples`` values
  at least (a healthy ReLU unit is off on :math:`n` examples with probability
  about :math:`2^{-n}`: on a batch of 2, a quarter of them look dead).
* **large-weights** - gain :math:`\gamma_l` above ``large_gain`` (He's is
  :math:`\sqrt2`, PyTorch's default :math:`1/\sqrt3`, GPT-2's :math:`0.02\sqrt{d}`).
* **vanishing** - :math:`u_l` below ``vanishing_ratio`` (:math:`s_l`, where
  :math:`u_l` is not judged: a layer feeding a normalisation layer; a small
  :math:`s_l` beside a normal :math:`u_l` means the forward signal shrinks as
  much and every layer still moves at the same relative rate); for a
  recurrent layer, also the weakest gradient reaching an input step below
  ``time_ratio`` times the largest (vanishing through time; steps that get no
  gradient at all, such as padding after a sequence's end, are left out). A
  layer whose gradient is exactly zero while the model holds a parameter
  tensor that is exactly zero (a residual branch's last norm scale or weight
  under ``zero_init_residual``, SkipInit or Fixup) is not vanishing: the zero
  is the initialisation's, and the first update opens the path.

Two kinds of layer are exempt where their scale means nothing. A layer that
*feeds a normalisation layer* directly (a conv before BatchNorm) is
scale-invariant: its weight scale changes neither the output nor the
gradient's direction, so neither :math:`u_l` nor the gain is judged, and
"shrink its weights" is never advised; its signal, which scales as
:math:`1/\lVert W_l\rVert`, is taken as :math:`\lVert\delta_l\rVert\,\lVert W_l\rVert` and
compared with the other such layers only. Attention's *query and key*
projections get tiny gradients at initialisation by design (the softmax of
near-zero logits is flat), so :math:`s_l` and :math:`u_l` are not judged for them.
"""
from __future__ import annotations

import math
from typing import Sequence

from lib import probes as _probes
from lib.activations import kinds as _kinds
from lib.diagnose.advice import (
    FIX,
    FIX_DEAD_NORM,
    FIX_VANISHING_BOUNDED,
    FIX_VANISHING_NORM,
    FIX_VANISHING_TIME,
    KINDS,
    LABELS,
    SEE_ALSO,
)
from lib.diagnose.verdicts import Diagnosis, Issue, LayerVerdict, Thresholds, _num, _span

__all__ = ["Thresholds", "Issue", "LayerVerdict", "Diagnosis", "diagnose"]

_ATTENTION = ("query", "key")
_GAIN_ROLES = ("weight", "query", "key", "qkv")


def _ok(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _gain(r: _probes.LayerStats) -> float:
    if r.role not in _GAIN_ROLES or r.feeds_norm or r.fan_in <= 0 or r.numel <= 0:
        return math.nan
    return r.weight_norm / math.sqrt(r.numel / r.fan_in)


def _references(rows: list[_probes.LayerStats], value: list[float]) -> list[float]:
    """Per row, the value at the top of the body for that row's group: the last eligible
    row before the output layer, among the rows that feed a norm layer or among the rest."""
    last = len(rows) - 1
    ref: dict[bool, float] = {}
    for i, (r, v) in enumerate(zip(rows, value)):
        if i < last and _ok(v):
            ref[r.feeds_norm] = v
    return [ref.get(r.feeds_norm, math.nan) if i < last else math.nan
            for i, r in enumerate(rows)]


def diagnose(report: Sequence[_probes.LayerStats], *, thresholds: Thresholds | None = None,
             parameters: Sequence[_probes.ParamStats] | None = None) -> Diagnosis:
    """Apply the rules of the module docstring to a probe report (``rec.report()``).

    ``parameters`` (``rec.parameters()``) lets the diagnosis name parameters
    that hold NaN and see the normalisation layers' scales.
    """
    if isinstance(report, (str, bytes)) or not isinstance(report, Sequence):
        raise TypeError(f"report must be a list of lib.probes.LayerStats, got {type(report).__name__}")
    if not report:
        raise ValueError("report is empty: no layer with parameters ran in the forward pass")
    for i, r in enumerate(report):
        if not isinstance(r, _probes.LayerStats):
            raise TypeError(f"report[{i}] must be a lib.probes.LayerStats, got {type(r).__name__}")
        r.check(f"report[{i}]")
    th = Thresholds() if thresholds is None else thresholds
    if not isinstance(th, Thresholds):
        raise TypeError(f"thresholds must be a lib.diagnose.Thresholds, got {type(th).__name__}")
    if parameters is not None and (isinstance(parameters, (str, bytes))
                                   or not isinstance(parameters, Sequence)):
        raise TypeError(f"parameters must be a list of lib.probes.ParamStats "
                        f"(rec.parameters()) or None, got {type(parameters).__name__}")
    params = list(parameters or [])
    if not all(isinstance(p, _probes.ParamStats) for p in params):
        raise TypeError("parameters must be a list of lib.probes.ParamStats (rec.parameters())")
    rows = list(report)

    # A layer feeding a norm layer is scale-invariant: its output gradient scales as 1/|W|,
    # so |dL/dout| |W| is what it passes on; such layers are compared among themselves.
    sig = [(r.output_grad_norm * (r.weight_norm if r.feeds_norm else 1.0))
           if r.role not in _ATTENTION else math.nan for r in rows]
    upd = [r.weight_grad_norm / r.weight_norm
           if r.role not in _ATTENTION + ("embedding", "bare") and not r.feeds_norm
           and _ok(r.weight_norm) else math.nan for r in rows]
    refs_s, refs_u = _references(rows, sig), _references(rows, upd)
    any_grad = any(_ok(r.weight_grad_norm) or _ok(r.output_grad_norm) for r in rows)
    origin = _nonfinite_origin(rows)
    # parameter tensors that are exactly zero on purpose (zero_init_residual, SkipInit, Fixup)
    zeros = [p.name for p in params if p.requires_grad and p.numel and p.weight_norm == 0
             and p.role in ("norm", "weight", "bare") and not p.name.endswith("bias")]

    verdicts = []
    for r, s, u, ref_s, ref_u in zip(rows, sig, upd, refs_s, refs_u):
        rs = s / ref_s if _ok(ref_s) and math.isfinite(s) else math.nan
        ru = u / ref_u if _ok(ref_u) and math.isfinite(u) else math.nan
        gain = _gain(r)
        flags: list[str] = []
        notes = []
        if r.role in _ATTENTION:
            notes.append("attention query/key: tiny gradients at init by design")
        if r.feeds_norm:
            notes.append("feeds a normalisation layer: its weight scale does not matter")
        if r.frozen:
            notes.append("frozen")
        if origin is not None:
            if r.name in origin:
                flags.append("non-finite")
        elif not r.frozen and math.isnan(r.weight_grad_norm):
            flags.append("no-gradient")
        else:
            if (math.isfinite(rs) and rs > th.exploding_ratio) or \
                    (math.isfinite(ru) and ru > th.exploding_ratio):
                flags.append("exploding")
            few = 0 < r.unit_samples < th.dead_min_samples
            if few and not math.isnan(r.dead):
                notes.append(f"dead units not judged: {r.unit_samples} value(s) per unit "
                             f"(needs {th.dead_min_samples})")
            elif not math.isnan(r.dead) and r.dead > th.dead_fraction:
                flags.append("dead")
            if not math.isnan(r.saturated) and r.saturated > th.saturated_fraction:
                flags.append("saturated")
            if math.isfinite(gain) and gain > th.large_gain:
                flags.append("large-weights")
            blocked = bool(zeros) and r.weight_grad_norm == 0.0
            if blocked:
                notes.append(f"zero gradient behind zero-initialised {zeros[0]!r}: opens "
                             f"after the first update")
            elif (math.isfinite(ru) and ru < th.vanishing_ratio) or \
                    (not math.isfinite(ru) and math.isfinite(rs) and rs < th.vanishing_ratio) or \
                    (math.isfinite(r.time_grad_ratio) and r.time_grad_ratio < th.time_ratio):
                flags.append("vanishing")
            elif math.isfinite(rs) and rs < th.vanishing_ratio:
                notes.append("backward signal small, but the forward signal shrinks as much: "
                             "its relative update is the top layer's order")
        verdicts.append(LayerVerdict(r.name, r.kind, r.activation, r.weight_grad_norm, ru, rs,
                                     r.saturated, r.dead, bool(r.nonfinite), tuple(flags), gain,
                                     r.time_grad_ratio, "; ".join(notes)))

    issues = [_issue(kind, [v for v in verdicts if kind in v.flags], th, rows, params, any_grad)
              for kind in KINDS if any(kind in v.flags for v in verdicts)]
    first_s = next((v.relative_signal for v in verdicts if math.isfinite(v.relative_signal)),
                   math.nan)
    first_u = next((v.relative_grad for v in verdicts if math.isfinite(v.relative_grad)),
                   math.nan)
    return Diagnosis(issues, verdicts, rows, first_u, first_s, th, parameters=params)


def _nonfinite_origin(rows: list[_probes.LayerStats]) -> tuple[str, ...] | None:
    if not any(r.nonfinite for r in rows):
        return None
    forward = tuple(r.name for r in rows if r.first_nonfinite)
    if forward:
        return forward
    # NaN only in the backward pass: it spreads upstream, so the origin is the latest layer.
    return (next(r.name for r in reversed(rows) if r.nonfinite),)


def _issue(kind: str, rows: list[LayerVerdict], th: Thresholds,
           report: list[_probes.LayerStats], params: list[_probes.ParamStats],
           any_grad: bool) -> Issue:
    names = tuple(v.name for v in rows)
    fix, see_also = FIX[kind], SEE_ALSO[kind]
    if kind == "non-finite":
        bad = [p.name for p in params if p.nonfinite and math.isfinite(p.weight_norm) is False]
        spread = sum(r.nonfinite for r in report)
        holds = f" (parameter {', '.join(repr(b) for b in bad[:3])} holds NaN/Inf)" if bad else ""
        forward = any(r.first_nonfinite for r in report)
        where = "in the forward pass" if forward else "in the backward pass"
        evidence = (f"NaN or Inf first appears {where} at '{rows[0].name}'{holds}; "
                    f"{spread} of {len(report)} layers see it")
    elif kind == "no-gradient":
        by_name = {r.name: r for r in report}
        passed = [v.name for v in rows if _ok(by_name[v.name].output_grad_norm)]
        evidence = ("no gradient was recorded at all: no backward pass ran inside the probe, "
                    "it ran under torch.no_grad(), or every parameter is frozen"
                    if not any_grad else
                    f"{len(rows)} trainable layer(s) received no gradient: the loss does not "
                    "depend on them")
        if passed:
            evidence = (f"the outputs of {_span(tuple(passed))} received gradients but their "
                        f"parameters did not: the forward pass used other tensors than the "
                        f"modules' own parameters (torch.func.functional_call, a copy of the "
                        f"weights), which the probes cannot see")
    elif kind == "exploding":
        big = max(rows, key=lambda v: max(_f(v.relative_signal), _f(v.relative_grad)))
        evidence = (f"the backward signal at '{big.name}' is {_num(big.relative_signal)} times, "
                    f"its relative update {_num(big.relative_grad)} times the top layer's "
                    f"(limit {th.exploding_ratio:g})")
    elif kind == "large-weights":
        big = max(rows, key=lambda v: v.gain)
        evidence = (f"the weights of '{big.name}' have gain std*sqrt(fan_in) = {big.gain:.2f} "
                    f"(He: 1.41, limit {th.large_gain:g}): each such layer multiplies the "
                    "signal, and attention logits grow with its square")
    elif kind == "dead":
        worst = max(rows, key=lambda v: v.dead)
        evidence = (f"up to {worst.dead:.0%} of the units of '{worst.name}' output zero for every "
                    f"example, so no gradient passes them (limit {th.dead_fraction:.0%})")
        scale = _norm_scale(params)
        if scale is not None and scale < th.norm_scale:
            fix = FIX_DEAD_NORM
            evidence += f"; the normalisation layers' weights are tiny (median RMS {scale:.1e})"
    elif kind == "saturated":
        worst = max(rows, key=lambda v: v.saturated)
        evidence = (f"{worst.saturated:.0%} of the pre-activations of '{worst.name}' sit where the "
                    f"{worst.activation} derivative is below 5 % of its peak "
                    f"(limit {th.saturated_fraction:.0%})")
    else:
        timed = [v for v in rows if math.isfinite(v.time_grad_ratio)
                 and v.time_grad_ratio < th.time_ratio]
        first = rows[0]
        if timed:
            evidence = (f"through time: the weakest gradient reaching an input step of "
                        f"'{timed[0].name}' is {timed[0].time_grad_ratio:.1e} times the largest "
                        f"step's (limit {th.time_ratio:g})")
            fix = FIX_VANISHING_TIME
        else:
            low = min(_f(first.relative_signal, 1), _f(first.relative_grad, 1))
            evidence = (f"the gradient reaching '{first.name}' is {low:.1e} times the top "
                        f"layer's (limit {th.vanishing_ratio:g})")
        scale = _norm_scale(params)
        if scale is not None and scale < th.norm_scale:
            fix = FIX_VANISHING_NORM
            evidence += f"; the normalisation layers' weights are tiny (median RMS {scale:.1e})"
        elif not timed and any(_bounded(v.activation) for v in rows):
            fix, see_also = FIX_VANISHING_BOUNDED, ("ch-sigmoid-tanh", "ch-relu", "ch-init")
    return Issue(kind, names, evidence, fix, LABELS[kind], see_also)


def _norm_scale(params: list[_probes.ParamStats]) -> float | None:
    """The median RMS of the normalisation layers' weights, None without any."""
    norms = sorted(p.weight_norm / math.sqrt(p.numel) for p in params
                   if p.role == "norm" and p.name.endswith("weight") and p.numel)
    return norms[len(norms) // 2] if norms else None


def _bounded(name: str | None) -> bool:
    kind = _kinds.kinds().get(name or "")
    return bool(kind and kind.bounded)


def _f(v: float, default: float = -1.0) -> float:
    return v if math.isfinite(v) else default
