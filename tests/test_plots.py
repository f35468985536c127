"""Tests of lib.plots: figures come back with labelled axes and the house colours."""
from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from lib import activations, plots, training

assert matplotlib.get_backend().lower() == "agg"  # set by conftest: no window ever opens


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(ax: Axes) -> bool:
    return bool(ax.get_xlabel().strip()) and bool(ax.get_ylabel().strip())


def test_every_activation_has_its_own_house_colour():
    for name in activations.names():
        assert name in plots.COLORS
        assert plots.color(name) == plots.COLORS[name]
        assert plots.color(name.upper()) == plots.COLORS[name]
    families = {plots.color(n) for n in activations.names() if n != "swish"}  # swish is SiLU's
    assert len(families) == len(activations.names()) - 1
    # Unknown names take a cycle colour by index, the same one every time.
    assert plots.color("my model", 3) == plots.color("another", 3)
    assert plots.color("my model", 0) != plots.color("my model", 1)


def test_new_figure_sizes_by_panel_row():
    fig, axes = plots.new_figure(3, 2, width=9.0, height=2.0)
    assert isinstance(fig, Figure) and axes.shape == (2, 3)
    assert tuple(fig.get_size_inches()) == pytest.approx((9.0, 4.0))


def test_layer_profile_is_a_labelled_log_plot_in_the_house_colour():
    fig, ax = plots.new_figure()
    values = torch.tensor([1e-6, 1e-3, 0.0, 1.0])
    assert plots.layer_profile(ax, values, label="tanh") is ax
    (line,) = ax.get_lines()
    assert to_hex(line.get_color()) == plots.color("tanh")
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
    y = line.get_ydata()
    assert math.isnan(y[2])  # a zero cannot sit on a log axis: left out, not plotted at 0
    assert ax.get_yscale() == "log" and _labelled(ax)
    plots.layer_profile(ax, [1.0, 2.0], key="relu", label="ReLU, He init")
    assert to_hex(ax.get_lines()[1].get_color()) == plots.color("relu")
    _, lin = plots.new_figure()
    plots.layer_profile(lin, [0.0, -1.0, 2.0], logy=False, ylabel="mean")
    assert lin.get_yscale() == "linear" and lin.get_ylabel() == "mean"
    np.testing.assert_array_equal(lin.get_lines()[0].get_ydata(), [0.0, -1.0, 2.0])


def test_activation_panels_show_forward_and_closed_form_derivative():
    names = ["sigmoid", "relu", "leaky_relu"]
    fig, (a, b) = plots.activation_panels(names, params={"leaky_relu": {"slope": 0.1}})
    assert isinstance(fig, Figure) and _labelled(a) and _labelled(b)
    assert [to_hex(line.get_color()) for line in a.get_lines()] == [plots.color(n) for n in names]
    assert [to_hex(line.get_color()) for line in b.get_lines()] == [plots.color(n) for n in names]
    x = torch.as_tensor(b.get_lines()[2].get_xdata())
    leaky = activations.get("leaky_relu", slope=0.1)
    np.testing.assert_allclose(b.get_lines()[2].get_ydata(), leaky.derivative(x).numpy())
    np.testing.assert_allclose(a.get_lines()[0].get_ydata(), torch.sigmoid(x).numpy())
    assert "slope=0.1" in a.get_legend().get_texts()[2].get_text()


def _history(loss, steps, acc) -> training.History:
    return training.History(loss=list(loss), eval_steps=list(steps), test_acc=list(acc))


def test_training_curves_use_one_colour_per_run():
    runs = {"sigmoid": _history([2.0, 1.0, 0.5, 0.25], [2, 4], [0.3, 0.6]),
            "deep relu": _history([2.0, 2.0, 1.0, 1.0], [2, 4], [0.2, 0.4]),
            "regression": _history([1.0, 0.5, 0.2, 0.1], [4], [math.nan])}
    fig, (a, b) = plots.training_curves(runs, keys={"deep relu": "relu"}, smooth=2)
    assert _labelled(a) and _labelled(b) and a.get_yscale() == "log"
    colours = [to_hex(line.get_color()) for line in a.get_lines()]
    assert colours[:2] == [plots.color("sigmoid"), plots.color("relu")]
    np.testing.assert_allclose(a.get_lines()[0].get_ydata(), [1.5, 0.75, 0.375])  # 2-step mean
    # No accuracy line for a run without accuracies (regression).
    assert len(b.get_lines()) == 2
    assert b.get_ylim() == pytest.approx((0.0, 1.02))


def test_histogram_grid_has_one_labelled_panel_per_layer():
    g = torch.Generator().manual_seed(0)
    samples = {f"layer{i}": torch.randn(200, generator=g) for i in range(1, 6)}
    fig, axes = plots.histogram_grid(samples, ncols=3, key="tanh", xlabel="activation")
    assert axes.shape == (2, 3)
    visible = [ax for ax in axes.flat if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(samples)
    assert len(visible) == 5
    assert all(ax.get_xlabel() == "activation" for ax in visible)
    assert all(ax.get_ylabel() for ax in axes[:, 0])
    assert all(to_hex(p.get_facecolor()) == plots.color("tanh") for ax in visible
               for p in ax.patches)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: plots.new_figure(0), ValueError, "ncols"),
    (lambda: plots.new_figure(1, 2.0), TypeError, "nrows"),
    (lambda: plots.layer_profile("axes", [1.0]), TypeError, "ax"),
    (lambda: plots.layer_profile(plots.new_figure()[1], ["a", "b"]), TypeError, "values"),
    (lambda: plots.layer_profile(plots.new_figure()[1], [[1.0, 2.0]]), ValueError, "values"),
    (lambda: plots.activation_panels("relu"), TypeError, "names"),
    (lambda: plots.activation_panels(["relu", "nope"]), ValueError, "unknown activation 'nope'"),
    (lambda: plots.activation_panels(["elu"], params={"elu": {"alpha": -1}}), ValueError, "alpha"),
    (lambda: plots.training_curves([1.0, 0.5]), TypeError, "histories"),
    (lambda: plots.training_curves({}, smooth=0), ValueError, "smooth"),
    (lambda: plots.histogram_grid({}), ValueError, "samples"),
    (lambda: plots.histogram_grid([torch.ones(3)]), TypeError, "samples"),
    (lambda: plots.histogram_grid({"a": torch.ones(3)}, bins=0), ValueError, "bins"),
    (lambda: plots.histogram_grid({"a": torch.ones(3)}, ncols=0), ValueError, "ncols"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- bad input found by fuzzing the public API (issue 18) ---

def test_histograms_of_samples_with_inf_or_nan_count_them_instead_of_failing():
    samples = {"layer1": torch.tensor([1.0, 2.0, math.inf, -math.inf, math.nan, 3.0]),
               "layer2": torch.full((4,), math.inf), "layer3": np.array([0.5, 1.5])}
    fig, axes = plots.histogram_grid(samples, bins=5)
    titles = [ax.get_title() for ax in axes.flat[:3]]
    assert titles == ["layer1 (3 non-finite)", "layer2 (4 non-finite)", "layer3"]
    assert sum(p.get_height() for p in axes.flat[0].patches) == 3  # the three finite samples


def test_layer_profile_leaves_inf_and_nan_out_as_gaps():
    _, ax = plots.new_figure()
    plots.layer_profile(ax, [1.0, math.inf, math.nan, 2.0], label="relu")
    y = ax.get_lines()[0].get_ydata()
    assert y[0] == 1.0 and y[3] == 2.0 and math.isnan(y[1]) and math.isnan(y[2])


@pytest.mark.parametrize("call,exc,match", [
    (lambda: plots.histogram_grid({"a": [1.0]}, range_=(1.0, 0.0)), ValueError, r"range_\[1\]"),
    (lambda: plots.histogram_grid({"a": [1.0]}, range_=(0.0, math.inf)), ValueError, r"range_\[1\]"),
    (lambda: plots.histogram_grid({"a": [1.0]}, range_=5), TypeError, "range_"),
    (lambda: plots.histogram_grid({"a": ["x"]}), TypeError, "samples"),
    (lambda: plots.histogram_grid({"a": [1.0]}, bins=0), ValueError, "bins"),
    (lambda: plots.new_figure(width=math.nan), ValueError, "width"),
    (lambda: plots.new_figure(height=-1), ValueError, "height"),
    (lambda: plots.new_figure(np.int64(0)), ValueError, "ncols"),
])
def test_more_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_numpy_sizes_are_accepted():
    fig, axes = plots.new_figure(np.int64(2), width=np.float32(6.0))
    assert len(axes) == 2
