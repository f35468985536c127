"""Tests of lib.notebook: the chapters' shared set-up."""
from __future__ import annotations

import matplotlib as mpl
import pytest
import torch

from lib import notebook, plots, seeds


@pytest.fixture(autouse=True)
def _restore():
    threads, rc = torch.get_num_threads(), dict(mpl.rcParams)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
    mpl.rcParams.update(rc)


def test_setup_sets_one_thread_the_style_and_returns_the_base_seed(monkeypatch):
    monkeypatch.delenv(seeds.ENV_VAR, raising=False)
    assert notebook.setup() == seeds.DEFAULT_BASE_SEED
    assert torch.get_num_threads() == notebook.THREADS == 1
    for key, value in plots.HOUSE_STYLE.items():
        assert mpl.rcParams[key] == mpl.rcParams.validate[key](value), key
    monkeypatch.setenv(seeds.ENV_VAR, "7")
    assert notebook.setup() == 7


def test_subnormals_are_flushed_unless_asked_not_to():
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a float32 subnormal
    notebook.setup()
    assert float(tiny * 1.0) == 0.0
    notebook.setup(flush_denormal=False)
    assert float(tiny * 1.0) > 0.0


def test_importing_plots_changes_no_matplotlib_state():
    import importlib

    before = dict(mpl.rcParams)
    importlib.reload(plots)
    assert dict(mpl.rcParams) == before
    with plots.style():
        assert mpl.rcParams["axes.spines.top"] is False
    assert dict(mpl.rcParams) == before


@pytest.mark.parametrize("kw,exc", [({"threads": 0}, ValueError), ({"threads": 1.5}, TypeError),
                                    ({"flush_denormal": "yes"}, TypeError),
                                    ({"style": 1}, TypeError)])
def test_bad_input_names_the_argument(kw, exc):
    with pytest.raises(exc, match=next(iter(kw))):
        notebook.setup(**kw)


def test_in_a_kernel_figures_are_shown_as_laid_out_not_cropped_tight():
    """The inline PNG is the whole laid-out figure (figsize x dpi), not a tight crop."""
    import base64
    import struct

    import matplotlib.pyplot as plt
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib_inline.config import InlineBackend

    shell = InteractiveShell.instance()
    try:
        shell.kernel = object()  # what setup looks for: a shell inside a kernel
        notebook.setup()
        fig, _ = plots.new_figure(width=4.0, height=2.0)
        fig.axes[0].plot([0, 1], [0, 1])
        data, _ = shell.display_formatter.format(fig)
        png = data["image/png"]
        png = png if isinstance(png, bytes) else base64.b64decode(png)
        width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        assert (width, height) == (round(4.0 * fig.dpi), round(2.0 * fig.dpi))
        plt.close(fig)
    finally:
        InlineBackend.clear_instance()  # setup configured it for this shell
        InteractiveShell.clear_instance()


def test_in_a_kernel_figures_are_drawn_once_with_the_same_pixels():
    """lib's PNG formatter (one draw) gives IPython's own output (savefig: two draws),
    byte for byte, on a figure that exercises constrained layout: log axes with
    mathtext tick labels, a legend, a title, two panels."""
    import base64

    import matplotlib.pyplot as plt
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure
    from matplotlib_inline.config import InlineBackend

    shell = InteractiveShell.instance()
    try:
        shell.kernel = object()
        notebook.setup()
        png = shell.display_formatter.formatters["image/png"]
        assert png.lookup_by_type(Figure) is notebook._png
        fig, axes = plots.new_figure(2, width=8.0, height=3.0)
        for k, ax in enumerate(axes):
            ax.plot(np.arange(1, 21), np.logspace(-3 * k, 2, 20), "-o", label="a line")
            ax.set(yscale="log", xlabel="layer $l$", title=f"panel {k}")
            ax.legend()
        ours = base64.b64decode(png(fig))
        theirs = base64.b64decode(print_figure(fig, "png", bbox_inches=None, base64=True))
        assert ours == theirs
        empty = plt.figure()
        assert png(empty) is None  # as IPython: an empty figure shows nothing
        plt.close("all")
    finally:
        InlineBackend.clear_instance()
        InteractiveShell.clear_instance()
