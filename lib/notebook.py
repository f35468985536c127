"""The numeric and display set-up every chapter runs first: one call, one place.

Each chapter starts with::

    from lib import notebook
    SEED = notebook.setup()

instead of its own thread and denormal lines, so every page computes under the
same conditions and a change to them is made once. :func:`setup`

* sets torch to **one thread**: the book's tensors are small (width-64
  layers), where a second thread only adds synchronisation, and the book
  build runs two notebooks side by side on two cores. It also makes training
  bit-identical from run to run: a float sum's rounding depends on how the
  work is split between threads, so results are reproducible only at a fixed
  thread count (this one);
* **flushes subnormal floats to zero**: vanishing gradients underflow into
  subnormals, which CPUs handle about 100 times more slowly; flushing changes
  only values below about :math:`10^{-38}` (float32's smallest normal number);
* applies the house figure style (:func:`lib.plots.use_style`) explicitly:
  importing :mod:`lib.plots` changes no matplotlib state. In a Jupyter
  kernel it also shows figures as laid out (IPython's inline display
  otherwise crops every figure to a "tight" box, which measures every
  label again: a quarter of each figure's rendering time, for a figure
  that constrained layout has already fitted);
* leaves the warnings filters alone: nothing is silenced globally. A warning a
  reader would see is fixed where it is raised, and the book's test
  (``tests/test_notebook_stderr.py``) fails when any executed cell writes to
  stderr;
* returns the book's base seed, :func:`lib.seeds.base_seed` (``GF_SEED``).
"""
from __future__ import annotations

from typing import Any

import torch

from lib import plots as _plots
from lib import seeds as _seeds
from lib._checks import check_bool, check_int

__all__ = ["setup", "THREADS", "glue_summary"]

#: torch's intra-op thread count in every chapter.
THREADS = 1


def setup(*, threads: int = THREADS, flush_denormal: bool = True, style: bool = True) -> int:
    """Apply the book's numeric and figure set-up; return the base seed.

    Args:
        threads: torch's intra-op thread count (default 1; see the module docstring).
        flush_denormal: flush subnormal floats to zero (where the CPU supports it).
        style: apply the house matplotlib style.

    Returns:
        :func:`lib.seeds.base_seed`, the seed every experiment derives from.

    Examples:
        >>> SEED = setup()
        >>> torch.get_num_threads()
        1
    """
    threads = check_int(threads, "threads", ge=1)
    check_bool(flush_denormal, "flush_denormal")
    check_bool(style, "style")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    if style:
        _plots.use_style()
        _inline_figures_as_laid_out()
    return _seeds.base_seed()


def _inline_figures_as_laid_out() -> None:
    """Show inline figures at their laid-out size, without IPython's "tight" crop,
    drawn once.

    IPython's PNG formatter goes through ``Figure.savefig``, which draws a
    figure with a layout engine twice (a first pass lays it out, the second
    renders): :func:`_png` renders it with one ``canvas.print_png``, whose draw
    runs constrained layout itself at the figure's own dpi. The pixels are the
    same (``tests/test_notebook.py`` compares them) for about a third less
    rendering time. Does nothing outside an IPython kernel (a script, the unit
    tests).
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - lib runs without IPython (scripts)
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib.figure import Figure
    from matplotlib_inline.config import InlineBackend

    config = InlineBackend.instance(parent=shell)
    # None: fall back to rcParams["savefig.bbox"], "standard" in the house style.
    # Updated in place (assigning the trait fires a deprecated traitlets hook),
    # so a backend activated later (configure_inline_support) reads it too.
    config.print_figure_kwargs.update(bbox_inches=None)
    select_figure_formats(shell, config.figure_formats, **config.print_figure_kwargs)
    if "png" in config.figure_formats and set(config.print_figure_kwargs) <= {"bbox_inches"}:
        shell.display_formatter.formatters["image/png"].for_type(Figure, _png)


def _png(fig: Any) -> str | None:
    """``fig`` as a base64 PNG at its own dpi and size, drawn in one pass (see above).

    Falls back to IPython's own path for a canvas that is not Agg's.
    """
    import base64
    import io

    from IPython.core.pylabtools import print_figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not fig.axes and not fig.lines:
        return None  # as IPython: an empty figure shows nothing
    if not isinstance(fig.canvas, FigureCanvasAgg):
        return print_figure(fig, "png", bbox_inches=None, base64=True)
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def glue_summary(key: str, values: Any, fmt: str) -> Any:
    """Glue the median of per-seed ``values`` as ``key`` and its summary as ``key_s``.

    ``key_s`` reads "median [lo, hi], n seeds" (:func:`lib.stats.summary`
    formatted with ``fmt``, e.g. ``".2f"``), the form every verdict in the
    book quotes. Returns the :class:`lib.stats.Summary`.
    """
    from myst_nb import glue

    from lib import stats as _stats

    s = _stats.summary(values)
    glue(key, float(s.median), display=False)
    glue(f"{key}_s", format(s, fmt), display=False)
    return s
