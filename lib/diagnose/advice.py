"""What each verdict means for the reader: the fix to try and the chapter that explains it.

:data:`CHAPTERS` maps every verdict to ``(title, url)`` of the book's chapter
(the url ends in the chapter's MyST label, which ``tests/test_diagnose.py``
checks against ``book/``); :data:`LABELS` gives that label alone.
"""
from __future__ import annotations

__all__ = ["KINDS", "CHAPTERS", "LABELS", "BOOK_URL", "FIX", "SEE_ALSO"]

#: Every verdict, most severe first. A model's main problem is the first one it has.
KINDS: tuple[str, ...] = ("non-finite", "no-gradient", "exploding", "dead", "saturated",
                          "large-weights", "vanishing")

#: Where the book is published.
BOOK_URL = "https://gradient-flow-book.github.io/gradient-flow/book/"

_PAGES: dict[str, tuple[str, str]] = {
    "ch-sigmoid-tanh": ("Derivatives of sigmoid and tanh", "01_sigmoid_tanh"),
    "ch-chain-rule": ("The chain rule: vanishing and exploding gradients", "02_chain_rule"),
    "ch-relu": ("ReLU: what it fixes and what it does not", "03_relu"),
    "ch-dying-relu": ("The dying ReLU and its variants", "04_dying_relu"),
    "ch-init": ("Initialisation", "05_initialisation"),
    "ch-norm-residual": ("Normalisation, residual connections, clipping and Adam",
                         "06_normalisation_residuals"),
    "ch-architectures": ("Gradient flow in the architectures people train today",
                         "07_architectures"),
    "ch-diagnose": ("Diagnose your own network", "09_diagnose"),
}


def _chapter(label: str) -> tuple[str, str]:
    title, page = _PAGES[label]
    return title, f"{BOOK_URL}{page}.html#{label}"


#: The chapter label that explains each verdict.
LABELS: dict[str, str] = {
    "non-finite": "ch-norm-residual",
    "no-gradient": "ch-diagnose",
    "exploding": "ch-init",
    "large-weights": "ch-init",
    "dead": "ch-dying-relu",
    "saturated": "ch-sigmoid-tanh",
    "vanishing": "ch-chain-rule",
}

#: ``{kind: (chapter title, url)}`` for every verdict.
CHAPTERS: dict[str, tuple[str, str]] = {k: _chapter(v) for k, v in LABELS.items()}

FIX: dict[str, str] = {
    "non-finite": ("replace the NaN/Inf where it first appears (a weight, or the input); "
                   "then lower the learning rate, clip the gradient norm, and check the "
                   "loss for log(0)"),
    "no-gradient": ("run loss.backward() inside the probe, outside torch.no_grad(), and "
                    "check that the loss depends on these layers (nothing detached, no "
                    "unused branch, requires_grad=True)"),
    "exploding": ("re-initialise with the variance that keeps the signal steady (He for "
                  "ReLU, Xavier for tanh); clip the gradient norm or add normalisation if it "
                  "grows during training"),
    "large-weights": ("re-initialise these layers with a variance matched to their fan-in "
                      "(He/Xavier, or N(0, 0.02^2) as GPT-2 and ViT do)"),
    "dead": ("lower the learning rate, initialise with He init, or use an activation with a "
             "gradient on its negative side (Leaky ReLU, ELU, GELU)"),
    "saturated": ("bring the pre-activations back to the linear region: smaller initial "
                  "weights (Xavier), normalisation before the activation, or a "
                  "non-saturating activation (ReLU family)"),
    "vanishing": ("use an initialisation matched to the activation (He for ReLU), add "
                  "normalisation or residual connections"),
}
#: Variants of the vanishing fix, chosen by what the report shows.
FIX_VANISHING_BOUNDED = ("replace sigmoid/tanh in the hidden layers by ReLU with He init, or "
                         "keep them and add normalisation or residual connections")
FIX_VANISHING_NORM = ("the normalisation layers' scales (weights) are tiny: reset them to 1 "
                      "(nn.init.ones_) so that each block passes its signal on")
#: the fix for dead units behind normalisation layers whose scales are zero or tiny
FIX_DEAD_NORM = ("the normalisation layers' scales (weights) are tiny, so their outputs sit "
                 "at the bias and the ReLU after them never fires: reset the scales to 1 "
                 "(nn.init.ones_)")
FIX_VANISHING_TIME = ("the gradient fades through time: put the loss on every time step or "
                      "shorten the sequences, set the LSTM forget-gate bias to 1, or use a "
                      "gated/attention model over long spans")

SEE_ALSO: dict[str, tuple[str, ...]] = {
    "non-finite": ("ch-init",),
    "no-gradient": (),
    "exploding": ("ch-norm-residual",),
    "large-weights": ("ch-architectures",),
    "dead": ("ch-init",),
    "saturated": ("ch-init", "ch-relu"),
    "vanishing": ("ch-init", "ch-norm-residual"),
}
