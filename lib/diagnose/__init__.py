"""Plain-language diagnosis of a gradient-flow probe report.

:func:`diagnose` turns a :mod:`lib.probes` report into a verdict per layer and
for the whole model; :func:`diagnose_model` runs the one forward/backward pass
that produces the report, on any ``nn.Module``::

    d = lib.diagnose.diagnose_model(model, x, y)
    print(d.table())      # one row per layer, with its verdict
    print(d.summary())    # what is wrong, the suggested fix, the chapter to read
    d.healthy, d.labels   # True/False, e.g. ["vanishing"]

The package: :mod:`lib.diagnose.rules` (the rules), :mod:`lib.diagnose.verdicts`
(their :class:`Thresholds` and results), :mod:`lib.diagnose.advice` (fixes, and the chapter for
each verdict as ``{kind: (title, url)}``), :mod:`lib.diagnose.run`
(:func:`diagnose_model`), :mod:`lib.diagnose.examples` (small models with
each problem; the only part that imports :mod:`lib.training`) and
:mod:`lib.diagnose.cli` (``python -m lib.diagnose``).
"""
from __future__ import annotations

from lib.diagnose.advice import CHAPTERS, KINDS, LABELS
from lib.diagnose.cli import main
from lib.diagnose.examples import SmallCNN, examples
from lib.diagnose.rules import Diagnosis, Issue, LayerVerdict, Thresholds, diagnose
from lib.diagnose.run import ModelError, diagnose_model

__all__ = ["Thresholds", "Issue", "LayerVerdict", "Diagnosis", "ModelError", "KINDS",
           "CHAPTERS", "LABELS", "diagnose", "diagnose_model", "examples", "SmallCNN", "main"]
