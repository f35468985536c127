"""The architectures people train today, small enough for a CPU, many seeds at once.

* :class:`ResNet1d` - a 1-D residual CNN (for MNIST-1D) in the orderings the
  literature compares: post-activation BatchNorm (He et al. 2016a),
  pre-activation BatchNorm (He et al. 2016b, "identity mappings"), no
  normalisation with He init, Fixup (Zhang, Dauphin & Ma 2019) and SkipInit
  (De & Smith 2020). One instance holds a whole *population* of ``members``
  independent networks.
* :func:`transformer` - a token model around PyTorch's own
  ``nn.TransformerEncoderLayer`` (``norm_first=False``: post-LN,
  ``norm_first=True``: pre-LN), and :class:`TransformerPopulation`, which runs
  several seeds of it as one vmapped computation.
* :func:`sequence_task` - small offline token tasks (sort, copy, reverse,
  modular addition) for the transformers.

Why the population is written here and not with ``torch.func.vmap``: a vmapped
BatchNorm needs its running statistics batched by hand, and a vmapped grouped
problem is slower than one grouped convolution. :class:`ResNet1d` stacks the
members along the channel axis and uses convolutions with ``groups=members``:
member ``m`` owns channels ``m*width .. (m+1)*width - 1`` of every layer, the
grouped convolution never mixes groups and BatchNorm's statistics are per
channel, so each member computes exactly what a separate network would, in
one kernel per layer. Training each member at its own SGD learning rate is
exact too: the gradient of ``sum_m lr_m * loss_m`` with respect to member
``m``'s weights is ``lr_m`` times its own gradient, and SGD with momentum is
linear in the gradient (see :func:`population_loss`). Transformers have no
BatchNorm, so :class:`TransformerPopulation` uses ``vmap`` over
``functional_call`` instead, with PyTorch's math attention kernel (the fused
CPU kernel has no batching rule and would loop over the members).
"""
from lib.architectures.mlp import TASKS, MLPPopulation, sequence_task
from lib.architectures.resnet import ORDERINGS, ResNet1d, population_loss
from lib.architectures.transformer import (
    TokenTransformer,
    TransformerPopulation,
    transformer,
)

__all__ = ["ORDERINGS", "ResNet1d", "population_loss", "transformer",
           "TokenTransformer", "TransformerPopulation", "MLPPopulation",
           "TASKS", "sequence_task"]
