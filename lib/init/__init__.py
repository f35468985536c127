r"""Weight initialisers and the variance theory that predicts what they do.

Two halves:

* :func:`apply` re-initialises every weight layer of a model with a named scheme
  from the registry :data:`SCHEMES` (``default``, ``xavier_uniform``,
  ``xavier_normal``, ``he``/``he_fan_in``, ``he_fan_out``, ``he_uniform``,
  ``orthogonal``, ``normal``, ``zeros``, ``constant``), and :func:`lsuv` does
  the data-dependent LSUV initialisation. Each :class:`Scheme` keeps its three
  facts together: how it fills a weight, the variance :math:`\operatorname{Var}[w]`
  that fill has, and its parameters with their defaults.
* :func:`predict` propagates variances through a deep stack with the mean-field
  recursions of Glorot & Bengio (2010) and He et al. (2015):

  .. math::

      q_l = n \operatorname{Var}[w]\, \mathbb{E}[f(z)^2], \quad z \sim N(0, q_{l-1})
      \qquad \text{(forward)}

      g_l = n \operatorname{Var}[w]\, \mathbb{E}[f'(z)^2]\, g_{l+1}
      \qquad \text{(backward)}

  with the Gaussian expectations computed by :func:`gaussian_moments`, a
  midpoint rule on a fine grid (not Gauss–Hermite quadrature: the kink of
  ReLU-like functions at 0 would cost Gauss–Hermite its accuracy, while a grid
  with 0 on a cell boundary integrates each smooth piece separately).

He initialisation takes the activation's *gain* (:func:`gain`): the factor
:math:`a` in :math:`\operatorname{Var}[w] = a^2 / n` that keeps the forward
variance constant through that activation. The default is ReLU's
:math:`a = \sqrt 2`, the case He et al. derived; ``nonlinearity=`` selects
another activation's gain (``init.apply(model, "he", nonlinearity="tanh")``),
and ``networks.mlp(..., init="he", init_params={"nonlinearity": "auto"})``
uses the network's own activation.
"""
from __future__ import annotations

from lib.init.moments import gaussian_moments
from lib.init.schemes import SCHEMES, Scheme, apply, gain, lsuv, schemes, weight_layers, weight_variance
from lib.init.theory import Prediction, predict, steps_to_loss

__all__ = ["Scheme", "SCHEMES", "schemes", "gain", "weight_variance", "apply", "lsuv",
           "weight_layers", "gaussian_moments", "predict", "Prediction", "steps_to_loss"]

