"""The probe itself: hooks that record per-layer and per-parameter statistics.

A *layer* is a module that owns parameters directly (Linear, Conv, Hugging
Face's Conv1D, Embedding, an RNN/LSTM/GRU, a MultiheadAttention; also one
whose weight is computed by ``torch.nn.utils.parametrizations``, whose
originals then count as its weight), other than a normalisation or
activation module; every parameter of the model, layers'
or not (norm layers' affine weights, a ViT's ``cls_token``), has its own row
in :meth:`Recorder.parameters`. What is measured, and when:

* **forward** (every pass inside the block, pooled): each layer's output at
  the moment it is produced; the *pre-activation* (the input of the
  activation applied to the layer's output, read in a forward *pre*-hook, so
  an in-place ``nn.ReLU(inplace=True)`` cannot overwrite it first) and the
  *activation* (that activation's output). An activation belongs to the
  layer whose output it takes: that very tensor (through norm layers, or
  added to in place, as a ResNet block's ``out += identity``), else the first
  layer output reached back through its autograd graph (``relu(out +
  shortcut(x))`` is the main branch's), else, with gradients off, the layer
  that ran last; an activation of a parameter (a learned gate) is no layer's.
  Activations are recognised by the registry :mod:`lib.activations.kinds`
  (PyTorch's, Hugging Face's, and any registered there); functional calls (``torch.relu(x)``, ``F.gelu(x)``,
  ``x.relu()``) are recognised too while the model's forward runs (the
  registered functions are wrapped while a recorder is attached).
* **backward**, captured when autograd computes them (tensor hooks on each
  layer output and parameter hooks), never read from ``.grad``: so
  ``zero_grad()``, gradient accumulation and a forward-only block cannot
  mislead. With several backward passes in the block, a gradient norm is the
  root mean square of the per-pass norms,
  :math:`\\sqrt{\\tfrac1P\\sum_p \\lVert g_p\\rVert^2}` (a second ``backward()``
  through a retained graph is a pass of its own; forward passes whose summed
  loss is backpropagated once are one pass); a module called several
  times per pass has its calls' output gradients combined (``calls`` counts
  them). No gradient at all is NaN, reported as such.
* **checkpointing**: a forward pass recomputed during backward
  (``torch.utils.checkpoint``) adds no forward statistics a second time.
* **non-finite** values are traced in forward order: the first layer whose
  output holds NaN/Inf (``first_nonfinite``), and every parameter that holds them.
* **through time**, for ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (padded or as a
  ``PackedSequence``): the norm of the gradient of the loss with respect to
  the input at each time step
  (:meth:`Recorder.through_time`), whose smallest-to-largest ratio is
  ``time_grad_ratio``.

All sums are accumulated in float32 at least and float64 where needed
(:mod:`lib.probes._moments`), whatever the model's dtype; a spread small
next to its mean (a saturated sigmoid) is computed from the deviations.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from lib._checks import SEED_MAX, check_bool, check_int, check_seed
from lib.activations import kinds as _kinds
from lib.probes import _moments
from lib.probes._names import is_norm, role
from lib.probes._state import _Grad, _Slot, backward_id, functional_off, functional_on, rnn_input_hook
from lib.probes.layers import (
    check_acyclic,
    first_tensor,
    fits,
    layer_modules,
    normalises,
    tensor_version,
    unit_dim,
)
from lib.probes.rows import LayerStats, ParamStats, format_table, layer_rows

__all__ = ["LayerStats", "ParamStats", "Recorder", "watch", "layer_modules", "format_table"]

_NAN = math.nan


class Recorder:
    """Collects statistics while attached; see :func:`watch` and the module docstring."""

    def __init__(self, model: nn.Module, keep_samples: int = 0, *, functional: bool = True,
                 seed: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
        if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            raise TypeError("watch() needs the uncompiled module: a torch.compile'd model runs "
                            "without hooks; watch model._orig_mod and call that instead")
        self.keep_samples = check_int(keep_samples, "keep_samples", ge=0)
        self.functional = check_bool(functional, "functional")
        self._gen = torch.Generator().manual_seed(check_seed(seed) % (SEED_MAX + 1))
        check_acyclic(model)
        lazy = [n for n, p in model.named_parameters()
                if isinstance(p, nn.parameter.UninitializedParameter)]
        if lazy:
            raise ValueError(f"model has lazy parameters not yet initialised ({lazy[0]!r}): "
                             f"run one forward pass, model(x), before watching it")
        self.model = model
        self._slots = [_Slot(n, m) for n, m in layer_modules(model)]
        self._by_module = {id(s.module): s for s in self._slots}
        self._order: list[_Slot] = []
        self._last: _Slot | None = None
        self._last_out: Any = None  # weak reference to the last layer output
        # Tensors known to come from a layer: its output, and what norm layers made of it
        # ({id: (weak reference, slot)}); an activation whose input is one is that layer's.
        self._made_by: dict[int, tuple[Any, _Slot]] = {}
        self._made_fn: dict[int, tuple[Any, _Slot]] = {}  # the same by their autograd node
        self._handles: list[Any] = []
        self._active = False
        self._in_forward = 0
        self._in_act = 0
        self._pass = 0  # forward passes of the whole model: a backward belongs to one
        self._calls = 0  # forward calls of any layer, in order
        self._act_of: dict[int, _kinds.Kind] = {}
        self._pending_act: _Slot | None = None
        #: count, per unit, the pre-activations > 0 (for :func:`active_fraction`)
        self.count_positive = False
        #: record forward statistics only of passes run with gradients enabled (Monitor)
        self.grad_only = False
        self._skip_pass = False
        # Every parameter once (tied ones share a row), with every name it goes by.
        self._params: dict[int, tuple[str, str, str, nn.Parameter]] = {}
        self._aliases: dict[int, list[str]] = {}
        for mname, mod in model.named_modules(remove_duplicate=False):
            for pname, p in mod.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                self._aliases.setdefault(id(p), [])
                if full not in self._aliases[id(p)]:
                    self._aliases[id(p)].append(full)
                rl = role(mname, mod, pname)
                if id(p) not in self._params:
                    self._params[id(p)] = (full, mname, rl, p)
                elif rl == "embedding":
                    # A weight tied to an embedding (a language model's output head)
                    # is an embedding table wherever it is used, whichever came first.
                    self._params[id(p)] = self._params[id(p)][:2] + (rl, p)
        self._pgrad: dict[int, _Grad] = {i: _Grad() for i in self._params}
        self._hooked: set[int] = set()  # parameters whose gradient hook is attached

    # -- forward hooks ---------------------------------------------------------
    def _root_pre(self, module: nn.Module, args: Any) -> None:
        self._in_forward += 1
        if self._in_forward == 1:
            self._skip_pass = self.grad_only and not torch.is_grad_enabled()
            self._pass += 1
            self._made_by.clear()
            self._made_fn.clear()
            self._last = self._last_out = None  # nothing of the last pass feeds this one
            self._hook_params()  # a parameter unfrozen since attach() has a gradient now

    def _hook_params(self) -> None:
        for pid, (_, _, _, p) in self._params.items():
            if p.requires_grad and pid not in self._hooked:
                self._hooked.add(pid)
                self._handles.append(
                    p.register_hook(lambda g, pid=pid: self._param_grad(pid, g)))

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._in_forward = max(self._in_forward - 1, 0)

    def _layer_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        out = first_tensor(output)
        if not self._active or out is None or self._skip_pass or out.numel() == 0:
            return  # an empty output (an expert routed no token) is no call of the layer
        slot = self._by_module[id(module)]
        if backward_id() != -1:
            # A forward pass recomputed during backward (activation checkpointing): its
            # statistics were taken the first time; only a reentrant checkpoint's
            # recomputed outputs receive the gradient, so they keep their hook.
            self._hook_out(slot, out)
            return
        if slot.calls == 0:
            self._order.append(slot)
        slot.calls += 1
        self._calls += 1
        if out.is_floating_point():
            finite = slot.out.add(out)
            slot.out_batch = (id(out), tensor_version(out), slot.out.last)
            if not finite and slot.nonfinite_at is None:
                slot.nonfinite_at = self._calls
            slot.nonfinite |= not finite
        slot.paired_now = False
        self._last, self._last_out = slot, weakref.ref(out)
        self._made_by[id(out)] = (self._last_out, slot)
        if out.grad_fn is not None:
            self._made_fn[id(out.grad_fn)] = (out.grad_fn, slot)
        self._hook_out(slot, out)

    def _hook_out(self, slot: _Slot, out: Tensor) -> None:
        """Record ``out``'s gradient for ``slot``, under this forward pass."""
        if out.requires_grad:
            p = self._pass
            out.register_hook(lambda g, s=slot, p=p: self._out_grad(s, p, g))

    def _made(self, t: Any) -> _Slot | None:
        """The layer ``t`` is the output of (through norm layers), if it is one."""
        src = self._made_by.get(id(t))
        return src[1] if src is not None and src[0]() is t else None

    def _out_grad(self, slot: _Slot, pass_id: int, grad: Tensor) -> None:
        if self._active:
            slot.out_grad.add(pass_id, _moments.sum_squares(grad))
            if self.keep_samples:
                slot.samples["grad"] = [self._sample(grad)]

    def _norm_pre(self, module: nn.Module, args: Any) -> None:
        if self._active and self._last is not None and args and self._last_out is not None \
                and args[0] is self._last_out() and normalises(module):
            self._last.feeds_norm = True

    def _norm_post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._active and args and isinstance(output, Tensor):
            src = self._made(args[0])
            if src is not None:
                self._made_by[id(output)] = (weakref.ref(output), src)
                if output.grad_fn is not None:
                    self._made_fn[id(output.grad_fn)] = (output.grad_fn, src)

    def _act_pre(self, module: nn.Module, args: Any) -> None:
        self._in_act += 1
        if args and isinstance(args[0], Tensor):
            self._pre(self._act_of[id(module)], args[0])

    def _act_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._in_act = max(self._in_act - 1, 0)
        if isinstance(output, Tensor):
            self._post(self._act_of[id(module)], output)

    def _source(self, z: Tensor) -> _Slot | None:
        """The layer whose activation ``z`` is (see the module docstring)."""
        src = self._made(z)
        if src is not None:
            # z is a layer's output (through norms, or added to in place as a residual
            # block's ``out += identity``): that layer's, even if another one ran since
            return src
        if id(z) in self._params:
            return None  # an activation of a parameter (a learned gate): no layer's
        # z computed from layer outputs (``relu(out + shortcut(x))``): the first one
        # reached walking its autograd graph back, operands in order
        seen, frontier = 0, [z.grad_fn] if z.grad_fn is not None else []
        while frontier and seen < 32:
            node = frontier.pop(0)
            seen += 1
            hit = self._made_fn.get(id(node))
            if hit is not None and hit[0] is node:
                return hit[1] if fits(hit[1].module, z) else None
            frontier += [n for n, _ in node.next_functions if n is not None]
        return self._last if self._last is not None and fits(self._last.module, z) else None

    def _pre(self, kind: _kinds.Kind, z: Tensor) -> None:
        ok = self._active and z.is_floating_point() and not self._skip_pass
        slot = self._source(z) if ok else None
        if not self._active or slot is None or slot.paired_now or not z.is_floating_point() \
                or backward_id() != -1:
            self._pending_act = None
            return
        slot.paired_now = True
        slot.activation = kind.name
        self._pending_act = slot
        ob = slot.out_batch
        if ob is not None and ob[0] == id(z) and ob[1] is not None and ob[1] == tensor_version(z) \
                and ob[2] is not None:
            slot.pre.add_batch(ob[2])  # the layer's output itself, unchanged: summed already
        else:
            slot.pre.add(z)
        thr = kind.saturation
        if thr is not None:
            slot.sat_count += int((z.detach().abs() > thr).sum())
            slot.sat_total += z.numel()
        if self.count_positive and z.dim() >= 2:
            unit = unit_dim(slot.module, z)
            pos = (z.detach() > 0).sum(dim=[d for d in range(z.dim()) if d != unit],
                                       dtype=torch.float64)
            if slot.positive is None or slot.positive.shape != pos.shape:
                slot.positive, slot.positive_n = pos, 0
            else:
                slot.positive = slot.positive + pos
            slot.positive_n += z.numel() // max(z.shape[unit], 1)
        if self.keep_samples:
            slot.samples["pre"].append(self._sample(z))

    def _post(self, kind: _kinds.Kind, output: Tensor) -> None:
        slot, self._pending_act = self._pending_act, None
        if slot is None:
            return
        self._last = None
        _, alive = slot.act.add_with_units(output, kind.nonnegative,
                                           unit_dim(slot.module, output))
        per_unit = output.numel() // max(alive.numel(), 1)
        if slot.alive is None or slot.alive.shape != alive.shape:
            slot.alive, slot.unit_samples = alive, per_unit
        else:
            slot.alive, slot.unit_samples = slot.alive | alive, slot.unit_samples + per_unit
        if self.keep_samples:
            slot.samples["act"].append(self._sample(output))

    def _rnn_pre(self, module: nn.Module, args: Any) -> Any:
        return rnn_input_hook(self, module, args)

    def _param_grad(self, pid: int, grad: Tensor) -> None:
        if self._active:
            self._pgrad[pid].add(self._pass, _moments.sum_squares(grad))

    def _sample(self, t: Tensor) -> Tensor:
        """``keep_samples`` entries drawn uniformly at random (seeded) from ``t``."""
        flat = t.detach().reshape(-1)
        if flat.numel() == 0:
            return flat.float().clone()
        idx = torch.randint(flat.numel(), (min(self.keep_samples, flat.numel()),),
                            generator=self._gen)
        return flat[idx].float()

    # -- lifecycle -------------------------------------------------------------
    def attach(self) -> "Recorder":
        if self._active:
            raise RuntimeError("this recorder is already attached")
        self._active = True
        h = self._handles
        h.append(self.model.register_forward_pre_hook(self._root_pre))
        h.append(self.model.register_forward_hook(self._root_post, always_call=True))
        for s in self._slots:
            h.append(s.module.register_forward_hook(self._layer_hook))
            if isinstance(s.module, nn.RNNBase):
                h.append(s.module.register_forward_pre_hook(self._rnn_pre))
            plist = getattr(s.module, "parametrizations", None)
            if plist is not None and "weight" in plist:
                # the weight a parametrisation computes, as the layer uses it (reading
                # module.weight here would run spectral_norm's power iteration again)
                h.append(plist["weight"].register_forward_hook(
                    lambda mod, args, w, s=s: setattr(s, "weight_used", w.detach())))
        for m in self.model.modules():
            kind = _kinds.kind_of_module(m)
            if kind is not None:
                self._act_of[id(m)] = kind
                h.append(m.register_forward_pre_hook(self._act_pre))
                h.append(m.register_forward_hook(self._act_post, always_call=True))
            elif is_norm(m):
                h.append(m.register_forward_pre_hook(self._norm_pre))
                h.append(m.register_forward_hook(self._norm_post))
        self._hook_params()
        if self.functional:
            functional_on(self)
        return self

    def detach(self) -> None:
        self._active = False
        # autograd nodes hold our hooks, which hold us: drop the nodes, or neither is freed
        self._made_fn.clear()
        self._made_by.clear()
        self._last = self._last_out = None
        functional_off(self)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._hooked.clear()

    @property
    def hook_count(self) -> int:
        """How many hooks are attached right now (0 after the ``with`` block)."""
        return len(self._handles)

    # -- results ---------------------------------------------------------------
    def parameters(self) -> list[ParamStats]:
        """One row per parameter tensor of the model (tied ones once, with their aliases)."""
        rows = []
        for pid, (name, owner, rl, p) in self._params.items():
            wn = _moments.norm(p)
            rows.append(ParamStats(name, owner, rl, tuple(p.shape), p.numel(), p.requires_grad,
                                   wn, self._pgrad[pid].norm(), len(self._pgrad[pid].passes),
                                   not math.isfinite(wn) or self._pgrad[pid].bad,
                                   tuple(self._aliases[pid][1:])))
        return rows

    def coverage(self) -> float:
        """Fraction of the model's parameter entries (each tensor once) in :meth:`parameters`."""
        total = sum(p.numel() for p in self.model.parameters())
        return sum(r.numel for r in self.parameters()) / total if total else 1.0

    def through_time(self) -> dict[str, Tensor]:
        """Per recurrent layer: the gradient norm with respect to the input at each time step.

        From the latest forward pass that was backpropagated. A layer called
        several times in one pass (a decoder loop feeding one step at a time,
        or an encoder run on two sequences) has its calls' steps joined in
        call order: for a step-by-step loop that is the whole sequence.
        """
        return {s.name: s.time_grads for s in self._order if s.time_grads is not None}

    def report(self) -> list[LayerStats]:
        """One :class:`LayerStats` per layer that ran, in forward order."""
        return layer_rows(self)

    def _by_name(self) -> list[tuple[str, _Slot]]:
        return [(s.name, s) for s in self._slots]

    def samples(self, name: str) -> dict[str, Tensor]:
        """Kept values (``keep_samples`` > 0) of layer ``name``: pre, act and grad."""
        for s in self._slots:
            if s.name == name:
                return {k: torch.cat(v) if v else torch.empty(0) for k, v in s.samples.items()}
        raise ValueError(f"no layer named {name!r}; layers: {', '.join(s.name for s in self._slots)}")

    def column(self, field: str) -> list[Any]:
        """One column of the report, e.g. ``rec.column('weight_grad_norm')``."""
        valid = list(LayerStats.__dataclass_fields__)
        if field not in valid:
            raise ValueError(f"unknown column {field!r}; columns: {', '.join(valid)}")
        return [getattr(r, field) for r in self.report()]

    def table(self, width: int = 24) -> str:
        """The report as a fixed-width text table (paths abbreviated from the left)."""
        return format_table(self.report(), width=width)


@contextlib.contextmanager
def watch(model: nn.Module, *, keep_samples: int = 0, functional: bool = True,
          seed: int = 0) -> Iterator[Recorder]:
    """Attach probes to ``model`` for the duration of the block.

    Args:
        model: any ``nn.Module`` (not a ``torch.compile`` wrapper: watch its ``_orig_mod``).
        keep_samples: > 0 keeps that many values per layer and pass, drawn uniformly at
            random (seeded by ``seed``), of the pre-activations, activations and output
            gradients, for histograms.
        functional: also recognise functional activations (``torch.relu(x)``).

    Examples:
        >>> with watch(model) as rec:
        ...     loss_fn(model(x), y).backward()
        >>> print(rec.table())
    """
    rec = Recorder(model, keep_samples=keep_samples, functional=functional, seed=seed)
    rec.attach()
    try:
        yield rec
    finally:
        rec.detach()
