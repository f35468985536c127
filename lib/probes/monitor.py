r"""Per-step monitoring inside your own training loop, with any ``torch.optim`` optimiser.

::

    mon = lib.probes.monitor(model, every=10)
    for step in range(steps):
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        mon.step(loss)            # after the update: it measures the update too
    mon.history[10].update_ratio  # {parameter: ||dW|| / ||W||} of step 10
    mon.to_tensorboard("runs/exp1")

Every ``every`` steps (0, ``every``, 2 ``every``, ...) the step's forward and
backward run under :func:`lib.probes.watch` (with a random sample of
activations and gradients kept for histograms), and the weights are copied
just before that step's update, so :meth:`Monitor.step` records, per layer,
the gradient norm, the dead and saturated fractions, and per parameter the
*update-to-weight ratio*

.. math:: r = \frac{\lVert W_{t+1} - W_t \rVert}{\lVert W_t \rVert},

whatever the optimiser did (momentum, Adam's scaling, weight decay, clipping).
Karpathy's rule of thumb (makemore, part 3) is :math:`\log_{10} r \approx -3`.
Steps in between run with no hook attached; forward passes without gradients
(a validation pass under ``torch.no_grad``) are not part of a step, and the
weights are copied when the step's first forward pass with gradients starts.

The gradient norm is the recorder's (:mod:`lib.probes.recorder`): with
gradient accumulation over micro-batches, the root mean square of the
micro-batches' gradient norms, not the norm of the summed ``.grad`` the
optimiser steps with; with ``torch.amp.GradScaler``, the gradient of the
*scaled* loss (divide by ``scaler.get_scale()``). The update ratio is always
the step the optimiser took.
"""
from __future__ import annotations

import math
import numbers
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lib._checks import check_int, check_seed
from lib.probes import _moments
from lib.probes.recorder import LayerStats, Recorder

__all__ = ["Snapshot", "Monitor", "monitor", "UPDATE_RATIO_GUIDE"]

#: Karpathy's guide for the update-to-weight ratio, log10 r ~ -3.
UPDATE_RATIO_GUIDE = 1e-3

#: Roles whose update ratio is shown: matrices, not biases or norm gains.
_MATRIX_ROLES = ("weight", "qkv", "query", "key", "embedding", "recurrent", "bare")


@dataclass
class Snapshot:
    """What one monitored step recorded."""

    step: int
    loss: float
    report: list[LayerStats]
    grad_norm: dict[str, float]
    update_ratio: dict[str, float]
    dead: dict[str, float]
    saturated: dict[str, float]
    act_std: dict[str, float]
    act_samples: dict[str, Tensor] = field(repr=False, default_factory=dict)
    grad_samples: dict[str, Tensor] = field(repr=False, default_factory=dict)
    #: whether a loss was given to :meth:`Monitor.step` (NaN then means a NaN loss)
    loss_given: bool = False


class Monitor:
    """Records a :class:`Snapshot` every ``every`` steps; see the module docstring."""

    def __init__(self, model: nn.Module, every: int = 10, *, samples: int = 1024,
                 seed: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.every = check_int(every, "every", ge=1)
        self.samples = check_int(samples, "samples", ge=0)
        self.seed = check_seed(seed)
        self.history: dict[int, Snapshot] = {}
        self._step = 0
        # what is attached to the model, held apart from the monitor so that a monitor
        # dropped without close() (a notebook cell run again) is detached when collected
        self._held: dict[str, Any] = {"rec": None, "hook": None}
        weakref.finalize(self, _release, self._held)
        self._before: dict[str, Tensor] = {}
        self._closed = False
        self._arm()

    # -- the loop ---------------------------------------------------------------
    def _arm(self) -> None:
        if self._step % self.every:
            return
        self._rec = Recorder(self.model, keep_samples=self.samples, seed=self.seed + self._step)
        # forward passes without gradients between steps (validation under no_grad, sampling)
        # are not the step's: the recorder skips them
        self._rec.grad_only = True
        self._before = {}
        self._rec.attach()
        if self._snap_hook is None:
            method = weakref.WeakMethod(self._snapshot)  # the model must not keep us alive

            def snapshot(module: nn.Module, args: Any) -> None:
                fn = method()
                if fn is not None:
                    fn(module, args)

            self._snap_hook = self.model.register_forward_pre_hook(snapshot)

    @property
    def _rec(self) -> Recorder | None:
        return self._held["rec"]

    @_rec.setter
    def _rec(self, rec: Recorder | None) -> None:
        self._held["rec"] = rec

    @property
    def _snap_hook(self) -> Any:
        return self._held["hook"]

    @_snap_hook.setter
    def _snap_hook(self, hook: Any) -> None:
        self._held["hook"] = hook

    def _snapshot(self, module: nn.Module, args: Any) -> None:
        # The weights as the monitored step's first forward pass with gradients finds them:
        # whatever changed them since the last step (.to(), load_state_dict) is no update.
        if self._rec is not None and not self._before and torch.is_grad_enabled():
            self._before = {n: p.detach().clone() for n, p in self._named()}

    def _named(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def step(self, loss: Any = None) -> Snapshot | None:
        """Call once per training step, after ``optimizer.step()``; returns the step's
        :class:`Snapshot` if it was a monitored one."""
        if self._closed:
            raise RuntimeError("this monitor is closed")
        lv = math.nan
        if loss is not None:
            if isinstance(loss, Tensor):
                if loss.numel() != 1:
                    raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
                if loss.is_complex() or loss.dtype == torch.bool:
                    raise TypeError(f"loss must be a real number, got a {loss.dtype} tensor")
                if loss.device.type == "meta":
                    raise ValueError("loss is a meta tensor: it holds no value to record")
                lv = float(loss.detach())
            elif isinstance(loss, numbers.Real) and not isinstance(loss, (bool, np.bool_)):
                try:
                    lv = float(loss)  # numpy scalars too (np.float32, np.int64)
                except OverflowError:
                    raise ValueError(f"loss must be a real number a float can hold, got "
                                     f"{loss!r:.40}") from None
            else:
                raise TypeError(f"loss must be a number, a scalar tensor or None, "
                                f"got {type(loss).__name__}")
        snap = None
        if self._rec is not None:
            snap = self._record(lv)
            snap.loss_given = loss is not None
        self._step += 1
        self._arm()
        return snap

    def _record(self, loss: float) -> Snapshot:
        rec = self._rec
        assert rec is not None
        rec.detach()
        self._rec = None
        report = rec.report()
        roles = {p.name: p.role for p in rec.parameters()}
        ratios = {}
        for n, p in self._named():
            if n in self._before and roles.get(n, "weight") in _MATRIX_ROLES:
                w = _moments.norm(self._before[n])
                d = _moments.norm(p.detach() - self._before[n])
                ratios[n] = d / w if w > 0 else math.nan
        self._before = {}
        acts, grads = {}, {}
        layers = {n for n, _ in rec._by_name()}
        for r in report:
            # an RNN's rows are '<layer>[l0]', '<layer>[l0_reverse]'; a name may hold '[' itself
            base = r.name if r.name in layers else r.name.rsplit("[", 1)[0]
            kept = rec.samples(base) if self.samples and base in layers else {}
            if kept and kept["act"].numel():
                acts[r.name] = kept["act"]
            if kept and kept["grad"].numel():
                grads[r.name] = kept["grad"]
        snap = Snapshot(self._step, loss, report,
                        {r.name: r.weight_grad_norm for r in report}, ratios,
                        {r.name: r.dead for r in report}, {r.name: r.saturated for r in report},
                        {r.name: r.act_std for r in report}, acts, grads)
        self.history[self._step] = snap
        return snap

    def close(self) -> None:
        """Detach any hooks (a monitored step that never happened is dropped)."""
        if self._rec is not None:
            self._rec.detach()
            self._rec = None
        if self._snap_hook is not None:
            self._snap_hook.remove()
            self._snap_hook = None
        self._closed = True

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- views ------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return sorted(self.history)

    def series(self, field_name: str) -> dict[str, list[float]]:
        """``{name: [value at each monitored step]}`` for ``grad_norm``, ``update_ratio``,
        ``dead``, ``saturated`` or ``act_std``; each list is aligned with :attr:`steps`
        (NaN where that name was not recorded)."""
        allowed = ("grad_norm", "update_ratio", "dead", "saturated", "act_std")
        if field_name not in allowed:
            raise ValueError(f"field must be one of {', '.join(allowed)}; got {field_name!r}")
        steps = self.steps
        out: dict[str, list[float]] = {}
        for i, s in enumerate(steps):
            for k, v in getattr(self.history[s], field_name).items():
                # aligned with .steps: NaN where the name was not recorded (a layer
                # that did not run, a parameter frozen at that step)
                out.setdefault(k, [math.nan] * len(steps))[i] = v
        return out

    def to_tensorboard(self, log_dir: str | Path | Any) -> list[str]:
        """Write the history as TensorBoard events; returns the tags written.

        ``log_dir`` is a folder, or a ``torch.utils.tensorboard.SummaryWriter``.
        Scalars ``grad_norm/<layer>``, ``update_ratio_log10/<parameter>``,
        ``dead/<layer>``, ``saturated/<layer>``, ``loss``; histograms
        ``activations/<layer>`` and ``gradients/<layer>``.
        """
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is optional

        own = not isinstance(log_dir, SummaryWriter)
        if own and not isinstance(log_dir, (str, Path)):
            raise TypeError(f"log_dir must be a folder path or a SummaryWriter, "
                            f"got {type(log_dir).__name__}")
        writer = SummaryWriter(str(log_dir)) if own else log_dir
        tags: set[str] = set()

        def scalar(tag: str, v: float, step: int, blown: bool = False) -> None:
            # NaN is "not measured", except where a value blew up (a NaN loss that was
            # given, a gradient the report marks non-finite): that step is the one to see
            if math.isfinite(v) or blown:
                writer.add_scalar(tag, v, step)
                tags.add(tag)

        for s in self.steps:
            snap = self.history[s]
            scalar("loss", snap.loss, s, blown=snap.loss_given)
            bad = {r.name for r in snap.report if r.nonfinite}
            for k, v in snap.grad_norm.items():
                scalar(f"grad_norm/{k}", v, s, blown=k in bad)
            for k, v in snap.update_ratio.items():
                scalar(f"update_ratio_log10/{k}", math.log10(v) if v > 0 else math.nan, s)
            for k, v in snap.dead.items():
                scalar(f"dead/{k}", v, s)
            for k, v in snap.saturated.items():
                scalar(f"saturated/{k}", v, s)
            for prefix, kept in (("activations", snap.act_samples),
                                 ("gradients", snap.grad_samples)):
                for k, v in kept.items():
                    if v.numel() and bool(torch.isfinite(v).all()):
                        writer.add_histogram(f"{prefix}/{k}", v, s)
                        tags.add(f"{prefix}/{k}")
        writer.flush()
        if own:
            writer.close()
        return sorted(tags)


def _release(held: dict[str, Any]) -> None:
    """Detach what a collected, unclosed monitor left on its model."""
    if held["rec"] is not None:
        held["rec"].detach()
        held["rec"] = None
    if held["hook"] is not None:
        held["hook"].remove()
        held["hook"] = None


def monitor(model: nn.Module, every: int = 10, *, samples: int = 1024, seed: int = 0) -> Monitor:
    """A :class:`Monitor` of ``model`` that records every ``every`` steps (see the module)."""
    return Monitor(model, every, samples=samples, seed=seed)
