"""Gradient-flow probes for any ``nn.Module``, through hooks.

Usage::

    with lib.probes.watch(model) as rec:
        loss = loss_fn(model(x), y)
        loss.backward()
    print(rec.table())            # one row per layer, in forward order
    rec.parameters()              # one row per parameter tensor (tied ones once)
    rec.through_time()            # recurrent layers: |dL/dx_t| per time step

    mon = lib.probes.monitor(model, every=10)   # in your own training loop
    for step in range(steps):
        loss_fn(model(x), y).backward()
        opt.step(); opt.zero_grad()
        mon.step()                # records at steps 0, 10, 20, ...
    mon.history                   # {step: per-layer grad norm, update ratio, ...}

What is measured and when is in :mod:`lib.probes.recorder`; per-step
monitoring, its figures and TensorBoard export in :mod:`lib.probes.monitor`
and :mod:`lib.probes.plots`; one-call measurements in
:mod:`lib.probes.functional`.
"""
from __future__ import annotations

from lib.activations import kinds as _kinds
from lib.probes.functional import (
                                   active_fraction,
                                   dead_units,
                                   gradient_norms,
                                   hidden_outputs,
                                   jacobian_singular_values,
)
from lib.probes.monitor import Monitor, Snapshot, monitor
from lib.probes.recorder import LayerStats, ParamStats, Recorder, format_table, layer_modules, watch

__all__ = ["LayerStats", "ParamStats", "Recorder", "watch", "layer_modules", "format_table",
           "SATURATION", "gradient_norms", "hidden_outputs", "jacobian_singular_values",
           "active_fraction", "dead_units", "Monitor", "Snapshot", "monitor"]

#: ``|pre-activation|`` beyond which a bounded activation counts as saturated: there its
#: derivative is below 5 % of its peak. Computed from each activation's derivative by
#: :mod:`lib.activations.kinds` (sigmoid ~4.357, tanh ~2.178), not typed in.
SATURATION: dict[str, float] = {name: k.saturation for name, k in _kinds.kinds().items()
                                if k.bounded and k.saturation is not None}
