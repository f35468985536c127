"""Gradient through time in recurrent networks, and the initialisers that shape it.

A recurrent network applies one transition at every time step. The gradient of
the loss with respect to the state :math:`h_t` obeys

.. math::

    \\frac{\\partial L}{\\partial h_{t-1}}
    = \\frac{\\partial L_{t-1}}{\\partial h_{t-1}}
    + J_t^\\top \\frac{\\partial L}{\\partial h_t},
    \\qquad J_t = \\frac{\\partial h_t}{\\partial h_{t-1}}
    = \\operatorname{diag}\\bigl(f'(a_t)\\bigr)\\, W_{hh}

for :math:`h_t = f(a_t)`, :math:`a_t = W_{ih} x_t + b + W_{hh} h_{t-1}`, so
a loss at step :math:`T` reaches step :math:`t` through the product
:math:`J_T \\cdots J_{t+1}`. :func:`hidden_gradients` measures
:math:`\\lVert \\partial L / \\partial h_t \\rVert` at every step;
:func:`decay_rate` fits the geometric factor per step;
:func:`step_jacobians` and :func:`predicted_rate` predict that factor from
the Jacobians' spectrum. Pascanu, Mikolov & Bengio (2013): with
:math:`|f'| \\le \\gamma` and :math:`\\lambda_1` the largest singular value
of :math:`W_{hh}`, :math:`\\lambda_1 < 1/\\gamma` is *sufficient* for
vanishing (every :math:`\\lVert J_t \\rVert \\le \\lambda_1 \\gamma < 1`) and
:math:`\\lambda_1 > 1/\\gamma` *necessary* for exploding
(:func:`pascanu_factor`).

Supported by :func:`hidden_gradients` (the state of every step and layer):

* ``nn.RNN`` (tanh, relu), ``nn.LSTM`` (``proj_size`` too; ``state="c"``
  for the cell), ``nn.GRU``: ``batch_first`` or not, batched or unbatched
  input, any ``num_layers``, with or without biases;
* the cells ``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell``, called once per
  step by the model; :class:`lib.networks.VanillaRNN`; and any submodule
  called once per step whose output is the state (pass it as ``module=``).

Refused, by name: ``bidirectional=True`` (the reverse direction's state at
step :math:`t` depends on the inputs after :math:`t`; there is no single
state per step: use :func:`input_gradients`, which supports it), packed
sequences, and inter-layer dropout in training mode.

Why the modules' own forward is not used as is: PyTorch's fused recurrent
kernels return the states of all steps as one output tensor, which is not the
tensor the next step reads, so autograd cannot give
:math:`\\partial L/\\partial h_t` from it. During the measurement only, the
module's forward is replaced by its documented equations written out step by
step with the module's own parameters; the result is checked against the
module's own forward before any gradient is taken (a mismatch raises
RuntimeError), and the tests check it against autograd on a hand-unrolled RNN.

Initialisers (in place, ending in ``_``): :func:`irnn_` (Le, Jaitly & Hinton
2015), :func:`orthogonal_` (Saxe et al. 2014; Henaff et al. 2016),
:func:`set_forget_bias_` (Gers et al. 2000; Jozefowicz et al. 2015).

Examples::

    >>> rnn = nn.RNN(2, 16, batch_first=True)
    >>> x = torch.randn(4, 30, 2)
    >>> g = hidden_gradients(rnn, x, loss_fn=lambda out: out[:, -1].sum())
    >>> g.shape, decay_rate(g) < 1
    (torch.Size([30]), True)
"""
from __future__ import annotations

from lib.recurrent.gradients import (
                                     GradientThroughTime,
                                     _recording,  # noqa: F401 (tests use it)
                                     decay_rate,
                                     find_recurrent,
                                     gradient_through_time,
                                     hidden_gradients,
                                     input_gradients,
)
from lib.recurrent.initialisers import irnn_, orthogonal_, set_forget_bias_
from lib.recurrent.spectrum import (
                                     GAMMA,
                                     max_singular_value,
                                     pascanu_factor,
                                     predicted_rate,
                                     recurrent_matrices,
                                     spectral_radius,
                                     step_jacobians,
)

__all__ = ["GAMMA", "GradientThroughTime", "find_recurrent", "hidden_gradients",
           "input_gradients", "gradient_through_time", "decay_rate", "recurrent_matrices",
           "spectral_radius", "max_singular_value", "pascanu_factor", "step_jacobians",
           "predicted_rate", "irnn_", "orthogonal_", "set_forget_bias_"]
