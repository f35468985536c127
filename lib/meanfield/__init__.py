"""Mean-field signal propagation: the length and correlation maps, and networks to test them.

A wide random network with weights :math:`W_{ij} \\sim \\mathcal N(0, \\sigma_w^2/n)`
and biases :math:`b_i \\sim \\mathcal N(0, \\sigma_b^2)` transforms the squared
length :math:`q_l` of a pre-activation vector (per unit) and the correlation
:math:`c_l` between the pre-activations of two inputs layer by layer
(Poole et al. 2016; Schoenholz et al. 2017):

.. math::

    q_{l+1} = \\sigma_w^2 \\,\\mathbb E_z\\big[\\phi(\\sqrt{q_l} z)^2\\big] + \\sigma_b^2,
    \\qquad
    c_{l+1} = \\frac{\\sigma_w^2\\,\\mathbb E\\big[\\phi(u_1)\\phi(u_2)\\big]
    + \\sigma_b^2}{q^*},

with :math:`u_1 = \\sqrt{q^*} z_1`, :math:`u_2 = \\sqrt{q^*}(c_l z_1 +
\\sqrt{1-c_l^2}\\, z_2)` and :math:`z, z_1, z_2` independent standard normals.
Near the fixed points :math:`q^*, c^*` the deviations decay as
:math:`e^{-l/\\xi}` with the depth scales

.. math::

    \\chi_1 = \\sigma_w^2\\,\\mathbb E[\\phi'(\\sqrt{q^*} z)^2], \\quad
    \\xi_c = -1/\\ln\\big(\\sigma_w^2\\,\\mathbb E[\\phi'(u_1)\\phi'(u_2)]_{c^*}\\big),
    \\quad
    \\xi_q = -1/\\ln\\big(\\sigma_w^2\\,\\mathbb E[\\phi'(u)^2 + \\phi(u)\\phi''(u)]\\big).

:math:`\\chi_1 < 1` is the ordered phase (:math:`c^* = 1`, every input
looks alike deep down, gradients vanish), :math:`\\chi_1 > 1` the chaotic
phase (:math:`c^* < 1`, nearby inputs decorrelate, gradients explode);
:math:`\\xi_c` diverges on the line :math:`\\chi_1 = 1`. The expectations are
Gauss-Hermite quadrature (``nodes`` points per dimension, exact for
polynomials up to degree ``2 nodes - 1``). It suits moderate variances: for
tanh at the default 64 nodes the relative error of
:math:`\\mathbb E[\\phi'^2]` is about 1e-7 at :math:`q = 1`, 1e-4 at
:math:`q = 2` and 4e-3 at :math:`q = 4`, and it grows quickly beyond, where
:math:`\\phi'(\\sqrt q z)` becomes a bump narrower than the nodes' spacing (use
:func:`lib.init.gaussian_moments`, a fine midpoint rule, there). ReLU-like
kinks converge more slowly (about 1e-4 in one dimension, 1e-3 in two). :math:`\\phi\\phi''`
is never needed: Stein's lemma gives
:math:`\\mathbb E[\\phi'^2 + \\phi\\phi''] = \\mathbb E[\\phi\\,\\phi'\\,z]/\\sqrt q`.

The second half builds *stacked* networks: ``M`` independent MLPs in one set
of tensors (weights ``(M, n_out, n_in)``, one :func:`torch.bmm` per layer), so
a whole grid of :math:`(\\sigma_w^2, \\sigma_b^2)` or of seeds is one
computation. It is hand-written rather than :mod:`lib.population` because each
member needs its own weight and bias variance, orthogonal draws, per-layer
widths and the input-output Jacobian, which a population of ``nn.Module``
builders does not expose cheaply.

:mod:`lib.meanfield.shattered` measures two finite-network effects the maps
leave out: shattered gradients (Balduzzi et al. 2017) and the spread of
log-norms across networks that grows with depth/width (Hanin & Rolnick 2018).

Examples:
    >>> s = depth_scales("tanh", 1.5, 0.05)
    >>> round(s.chi1, 3), s.xi_c > 1
    >>> net = stacked_mlp([1.5, 2.0], [0.05, 0.05], widths=[32] * 10, seeds=[1, 2])
    >>> net(torch.randn(8, 64)).shape
    torch.Size([2, 8, 10])
"""
from lib.meanfield.maps import (
    DepthScales,
    c_fixed_point,
    c_map,
    c_trajectory,
    chi1,
    depth_scales,
    gauss_expect,
    q_fixed_point,
    q_map,
    q_trajectory,
)
from lib.meanfield.shattered import (
    GradientField,
    autocorrelation,
    input_gradients,
    log_norms,
    relu_log_norm_variance,
    variance_and_error,
)
from lib.meanfield.stacked import (
    StackedMLP,
    StackedRun,
    correlation,
    stacked_mlp,
    train_stacked,
)

__all__ = ["gauss_expect", "q_map", "c_map", "q_fixed_point", "c_fixed_point", "chi1",
           "DepthScales", "depth_scales", "q_trajectory", "c_trajectory", "StackedMLP",
           "stacked_mlp", "StackedRun", "train_stacked", "correlation", "GradientField",
           "input_gradients", "autocorrelation", "log_norms", "relu_log_norm_variance",
           "variance_and_error"]
