"""Gradient Flow's shared code. Chapters import from here; they tell the story.

Modules, lowest first (a module imports only those above it in this list):

* :mod:`lib._checks` - argument checks shared by every module (private)
* :mod:`lib._progress` - the progress bar every training loop shows (private)
* :mod:`lib.seeds` - independent random streams from one seed
* :mod:`lib.stats` - median and interval over seeds; verdicts that need the evidence
* :mod:`lib.activations` - activations and their closed-form derivatives
* :mod:`lib.data` - small data sets that ship with the packages (no download)
* :mod:`lib.init` - initialisers and the variance theory that predicts them
* :mod:`lib.meanfield` - length and correlation maps, depth scales, stacked random nets
* :mod:`lib.networks` - MLP and RNN builders with readable layer names
* :mod:`lib.architectures` - residual CNNs and transformers of today, many seeds at once
* :mod:`lib.recurrent` - gradients through time in recurrent networks
* :mod:`lib.recurrent_population` - many recurrent nets as one block-diagonal nn.RNN/LSTM/GRU
* :mod:`lib.probes` - per-layer gradient-flow statistics for any ``nn.Module``
* :mod:`lib.training` - a seeded training loop that records gradient flow
* :mod:`lib._stacked` - the batched engine of lib.population (private)
* :mod:`lib.population` - many seeds and learning rates trained as one computation
* :mod:`lib.diagnose` - plain-language diagnosis of a probe report
* :mod:`lib.plots` - the house figure style
* :mod:`lib.notebook` - the numeric and figure set-up every chapter runs first
* :mod:`lib.interactive` - interactive figures (Vega-Lite) drawn from precomputed grids
"""
__version__ = "0.1.0"
