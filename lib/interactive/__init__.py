"""Interactive figures that work on a static page: no kernel, no server, no network.

At build time a chapter measures a small grid of networks with lib (seeded,
the models of one shape stacked into one computation), and draws the grid as
a Vega-Lite figure whose menus and sliders pick a grid point in the browser.
The JavaScript (vega, vega-lite, vega-embed) is served by the book itself;
the chapter's static matplotlib figure stays beside each interactive one, for
readers without JavaScript and for print.

* :mod:`lib.interactive.figure` - :class:`Figure` and its controls;
* :func:`stacked_stats` - lib.probes' per-layer statistics for many
  same-shaped MLPs in one pass;
* :mod:`lib.interactive.grids` - the chapters' grids and figures;
* :mod:`lib.interactive.playground` - the playground page's grid and figure.

Examples::

    >>> from lib import data, interactive, seeds
    >>> d = data.digits()
    >>> grid = interactive.profile_grid(d.x_train[:64], d.y_train[:64],
    ...     activations=["relu"], inits=["default", "he"], depths=[5, 10],
    ...     width=32, seed=seeds.base_seed())
    >>> interactive.profile_figure(grid)       # in a notebook: the figure
"""
from lib.interactive._probe import Stats, init_states, stacked_stats
from lib.interactive.figure import Figure, checkbox, color_scale, compact, matches, radio, select, slider
from lib.interactive.grids import (
           INIT_LABELS,
           Grid,
           dead_figure,
           dead_grid,
           phase_figure,
           phase_grid,
           profile_figure,
           profile_grid,
           variance_figure,
           variance_grid,
)
from lib.interactive.playground import playground_figure, playground_grid

__all__ = ["Stats", "stacked_stats", "init_states", "Figure", "select", "radio", "slider", "checkbox",
           "matches", "compact", "color_scale", "Grid", "INIT_LABELS", "profile_grid",
           "profile_figure", "phase_grid", "phase_figure", "variance_grid", "variance_figure",
           "dead_grid", "dead_figure", "playground_grid", "playground_figure"]
