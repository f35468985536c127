"""lib.interactive: the stacked probe equals lib.probes, each grid equals lib's direct
computation at a few grid points, the figures are valid Vega-Lite, bad input is refused."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lib import data, init, interactive, networks, probes
from lib.interactive import figure

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / ".cache" / "vega" / "node_modules" / "vega-lite" / "build" / "vega-lite-schema.json"


@pytest.fixture(scope="module")
def batch():
    d = data.digits(seed=0)
    return d.x_train[:48], d.y_train[:48]


def _probe(model, x, y):
    with probes.watch(model) as rec:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return rec


def _close(a, b, rtol=1e-4):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=0, equal_nan=True)


# -- the stacked probe against lib.probes ----------------------------------------------------

@pytest.mark.parametrize("act,norm,res", [("tanh", "none", False), ("relu", "batch", True),
                                          ("sigmoid", "layer", False), ("gelu", "none", True),
                                          ("leaky_relu", "batch", False)])
def test_stacked_stats_equal_lib_probes(batch, act, norm, res):
    x, y = batch
    models = [networks.mlp(5, 24, act, init=i, norm=norm, residual=res, seed=3)
              for i in ("default", "xavier_normal", "he")]
    s = interactive.stacked_stats(models, x, y, hist_layers=[0, 4])
    for k, m in enumerate(models):
        rec = _probe(m, x, y)
        assert s.names == rec.column("name")
        assert _close(s.grad[k], rec.column("weight_grad_norm"))
        assert _close(s.delta[k], rec.column("output_grad_norm"))
        rows = [r for r in rec.report() if r.activation]
        assert _close(s.pre_std[k], [r.pre_std for r in rows])
        assert _close(s.act_std[k], [r.act_std for r in rows])
        assert _close(s.dead[k], [r.dead for r in rows], rtol=1e-12)
        if act in probes.SATURATION:
            assert _close(s.saturated[k], [r.saturated for r in rows], rtol=1e-9)
        else:
            assert np.isnan(s.saturated[k]).all()
    for h in (*s.hist_act.values(), *s.hist_grad.values()):
        assert h.shape == (3, 40) and np.allclose(h.sum(1), 1.0)


def test_template_states_and_mixed_activations_equal_separate_models(batch):
    x, y = batch
    net = networks.mlp(4, 16, "relu", seed=7)
    states = interactive.init_states(net, ["default", "he"], seed=7)
    s = interactive.stacked_stats(net, x, y, states=states * 2,
                                  activations=["relu", "relu", "tanh", "tanh"])
    for k, (act, scheme) in enumerate([("relu", "default"), ("relu", "he"),
                                       ("tanh", "default"), ("tanh", "he")]):
        direct = probes.gradient_norms(networks.mlp(4, 16, act, init=scheme, seed=7), x, y)
        assert _close(s.grad[k], direct)
    assert np.isnan(s.saturated[:2]).all() and np.isfinite(s.saturated[2:]).all()


def test_dead_units_are_counted(batch):
    x, y = batch
    m = networks.mlp(3, 8, "relu", init="he", seed=1)
    with torch.no_grad():
        m.layer2.linear.bias[:3] = -1e3  # three units of layer 2 can never be positive
    s = interactive.stacked_stats([m], x, y)
    assert s.dead[0, 1] == pytest.approx(3 / 8)


# -- each grid against lib's direct computation, at a few points ------------------------------

def test_profile_grid_points_equal_gradient_norms(batch):
    x, y = batch
    g = interactive.profile_grid(x, y, activations=["sigmoid", "relu"],
                                 inits=["default", "he"], depths=[3, 6], width=16, seed=2)
    assert len(g.rows) == 8 and g.cpu_seconds > 0
    for act, scheme, depth in [("sigmoid", "default", 6), ("relu", "he", 3)]:
        r = g.row(act=act, init=scheme, depth=depth)
        model = networks.mlp(depth, 16, act, init=scheme, seed=r["seed"])
        direct = probes.gradient_norms(model, x, y)[:depth]
        assert _close(r["g"], direct)
        assert r["ratio"] == pytest.approx(direct[0] / direct[-1], rel=1e-4)


def test_phase_grid_point_equals_probes_in_float64(batch):
    x, y = batch
    sigmas = [0.5, 1.0, 2.0]
    g = interactive.phase_grid(x, y, sigmas=sigmas, bias_scales=[0.0, 0.3], depths=[4],
                               width=16, seed=1)
    r = g.row(sb=0.0, depth=4)
    for j, sigma in enumerate(sigmas):
        model = networks.mlp(4, 16, "tanh", init="normal", seed=r["seed"],
                             init_params={"std": sigma / 4.0}).double()
        rec = _probe(model, x.double(), y)
        delta = rec.column("output_grad_norm")
        assert r["ratio"][j] == pytest.approx(math.log10(delta[0] / delta[3]), abs=1e-6)
        assert r["first"][j] == pytest.approx(math.log10(rec.column("weight_grad_norm")[0]),
                                              abs=1e-6)
    # Bias noise changes the picture; the weights are the same draws.
    assert not np.allclose(g.row(sb=0.3, depth=4)["ratio"], r["ratio"])


def test_variance_grid_points_equal_probes_and_theory(batch):
    x, y = batch
    g = interactive.variance_grid(x, y, activations=["tanh", "relu"], inits=["he", "default"],
                                  depth=6, width=32, seed=0)
    r = g.row(act="relu", init="he")
    rec = _probe(networks.mlp(6, 32, "relu", init="he", seed=r["seed"]), x, y)
    assert _close(r["fwd"], np.array(rec.column("pre_std")[:6]) ** 2)
    d2 = np.array(rec.column("output_grad_norm")[:6]) ** 2
    assert _close(r["bwd"], d2 / d2[-1])
    pred = init.predict("relu", "he", 32, 6, input_var=float((x.double() ** 2).mean()))
    assert _close(r["fwd_th"], pred.pre_var, rtol=1e-9)


def test_playground_grid_point_equals_probes(batch):
    x, y = batch
    g = interactive.playground_grid(x, y, activations=["tanh", "relu"], inits=["default", "he"],
                                    depths=[2, 3], widths=[8], norms=["none", "layer"], seed=5)
    assert len(g.rows) == 2 * 2 * 2 * 1 * 2 * 2
    r = g.row(act="tanh", init="he", depth=3, width=8, norm="layer", res=True)
    model = networks.mlp(3, 8, "tanh", init="he", norm="layer", residual=True, seed=r["seed"])
    rec = _probe(model, x, y)
    assert _close(r["g"], rec.column("weight_grad_norm"))
    rows = [q for q in rec.report() if q.activation]
    assert _close(r["sat"], [100 * q.saturated for q in rows], rtol=1e-9)
    assert _close(r["dead"], [100 * q.dead for q in rows], rtol=1e-12)
    assert sum(r["act_first"]) == pytest.approx(100.0)


def test_dead_grid_relu_dies_leaky_does_not():
    d = data.digits(seed=0)
    g = interactive.dead_grid(d, activations=["relu", "leaky_relu"], lrs=[0.1], depth=3,
                              width=8, steps=12, probe_every=4, n_seeds=2, seed=0)
    relu, leaky = g.row(act="relu", lr=0.1), g.row(act="leaky_relu", lr=0.1)
    assert relu["step"] == [1, 4, 8, 12]
    assert max(relu["hi"]) > 0  # Adam at lr 0.1 kills units of a narrow ReLU net
    assert max(leaky["hi"]) == 0  # a leaky unit's output is never exactly zero
    assert all(lo <= m <= hi for lo, m, hi in zip(relu["lo"], relu["dead"], relu["hi"]))


def test_grids_are_seeded(batch):
    x, y = batch
    kw = dict(activations=["relu"], inits=["he"], depths=[3], width=8)
    a = interactive.profile_grid(x, y, seed=4, **kw).rows[0]["g"]
    b = interactive.profile_grid(x, y, seed=4, **kw).rows[0]["g"]
    c = interactive.profile_grid(x, y, seed=5, **kw).rows[0]["g"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# -- figures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def figures(batch):
    x, y = batch
    d = data.digits(seed=0)
    return {
        "profile": interactive.profile_figure(interactive.profile_grid(
            x, y, activations=["tanh", "relu"], inits=["default", "he"], depths=[2, 4],
            width=8, seed=0)),
        "phase": interactive.phase_figure(interactive.phase_grid(
            x, y, sigmas=[0.5, 2.0], bias_scales=[0.0, 0.1], depths=[2, 3], width=8, seed=0)),
        "variance": interactive.variance_figure(interactive.variance_grid(
            x, y, activations=["tanh"], inits=["he", "default"], depth=3, width=8, seed=0)),
        "dead": interactive.dead_figure(interactive.dead_grid(
            d, activations=["relu"], lrs=[0.01, 0.1], depth=2, width=8, steps=4,
            probe_every=2, n_seeds=1, seed=0)),
        "playground": interactive.playground_figure(interactive.playground_grid(
            x, y, activations=["relu"], inits=["he"], depths=[2], widths=[8],
            norms=["none"], seed=0)),
    }


def test_figures_are_valid_vega_lite(figures):
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} missing: run make setup (installs vega-lite from npm)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for name, fig in figures.items():
        errors = sorted(validator.iter_errors(json.loads(fig.to_json())), key=str)
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_figure_html_is_self_contained(figures):
    for name, fig in figures.items():
        html = fig._repr_html_()
        assert html.startswith(f'<div class="gf-interactive" id="{fig.id}"')
        spec = html.split('class="gf-spec">', 1)[1].rsplit("</script>", 1)[0]
        assert "</" not in spec
        assert json.loads(spec.replace("<\\/", "</")) == json.loads(fig.to_json())
        assert "http" not in spec.replace(figure.SCHEMA, ""), f"{name} refers to the network"
        assert fig.id == type(fig)(json.loads(fig.to_json())).id or fig.id.startswith("gf-fig-")
    assert len({f.id for f in figures.values()}) == len(figures)


def test_figure_json_escapes_closing_tags():
    fig = figure.Figure({"data": {"values": [{"a": "</script><b>"}]}, "mark": "point"})
    assert "</script><b>" not in fig._repr_html_()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_compact_gives_json_numbers(v):
    out = figure.compact(v)
    json.dumps(out, allow_nan=False)
    if math.isfinite(v):
        assert out == pytest.approx(v, rel=1e-3, abs=0)
    else:
        assert out is None


def test_compact_handles_arrays_and_refuses_objects():
    assert figure.compact(np.array([1.234567, np.nan])) == [1.235, None]
    assert figure.compact({"a": (1, True, "x")}) == {"a": [1, True, "x"]}
    with pytest.raises(TypeError, match="cannot put a object"):
        figure.compact(object())


def test_matches_builds_a_filter():
    assert figure.matches("act") == ("(isNumber(act) ? abs(datum.act - act) < 1e-9 : "
                                     "datum.act === act)")
    with pytest.raises(ValueError):
        figure.matches()
    with pytest.raises(ValueError, match="identifier"):
        figure.matches("not a name")


@pytest.mark.parametrize("call,err,msg", [
    (lambda: figure.select("a", []), ValueError, "non-empty"),
    (lambda: figure.select("a", "abc"), ValueError, "non-empty list"),
    (lambda: figure.select("a", [1, 2], value=3), ValueError, "not one of"),
    (lambda: figure.radio("a", [1, 2], labels=["x"]), ValueError, "labels"),
    (lambda: figure.slider("a", [1]), ValueError, "at least two"),
    (lambda: figure.slider("a", [1, 2, 4]), ValueError, "evenly spaced"),
    (lambda: figure.slider("a", [3, 2, 1]), ValueError, "evenly spaced"),
    (lambda: figure.slider("a", [1, 2], value=1.5), ValueError, "not one of"),
    (lambda: figure.checkbox("a", value=1), TypeError, "bool"),
    (lambda: figure.select("1a", [1]), ValueError, "identifier"),
    (lambda: figure.Figure([]), TypeError, "dict"),
    (lambda: figure.Figure({}, title=""), ValueError, "title"),
    (lambda: figure.Figure({}, [figure.checkbox("a"), figure.checkbox("a")]), ValueError,
     "distinct"),
])
def test_bad_controls_are_refused(call, err, msg):
    with pytest.raises(err, match=msg):
        call()


def test_slider_accepts_float_grids():
    s = figure.slider("sb", [0.0, 0.1, 0.2, 0.3], value=0.2)
    assert s["bind"] == {"input": "range", "min": 0.0, "max": 0.3, "step": 0.1, "name": "sb "}
    assert s["value"] == 0.2


# -- bad input to the engine and the grids ---------------------------------------------------

def test_bad_models_are_refused(batch):
    x, y = batch
    a, b = networks.mlp(2, 8, "relu"), networks.mlp(3, 8, "relu")
    with pytest.raises(TypeError, match="non-empty list"):
        interactive.stacked_stats(a, x, y)
    with pytest.raises(TypeError, match="non-empty list"):
        interactive.stacked_stats([], x, y)
    with pytest.raises(TypeError, match="lib.networks.MLP"):
        interactive.stacked_stats([torch.nn.Linear(64, 10)], x, y)
    with pytest.raises(ValueError, match="differs in structure"):
        interactive.stacked_stats([a, b], x, y)
    with pytest.raises(ValueError, match="PReLU"):
        interactive.stacked_stats([networks.mlp(2, 8, "prelu")], x, y)
    with pytest.raises(TypeError, match="x must be"):
        interactive.stacked_stats([a], x.long(), y)
    with pytest.raises(TypeError, match="y must be"):
        interactive.stacked_stats([a], x, y.float())
    with pytest.raises(ValueError, match="hist_layers"):
        interactive.stacked_stats([a], x, y, hist_layers=[2])
    with pytest.raises(TypeError, match="template"):
        interactive.stacked_stats([a], x, y, states=[dict(a.named_parameters())])
    with pytest.raises(ValueError, match="same shapes"):
        interactive.stacked_stats(a, x, y, states=[dict(b.named_parameters())])
    with pytest.raises(ValueError, match="one activation name per state"):
        interactive.stacked_stats(a, x, y, states=[dict(a.named_parameters())],
                                  activations=["relu", "tanh"])
    with pytest.raises(ValueError, match="only with a template"):
        interactive.stacked_stats([a], x, y, activations=["relu"])


def test_bad_grid_arguments_are_refused(batch):
    x, y = batch
    with pytest.raises(ValueError, match="activations must be a non-empty list"):
        interactive.profile_grid(x, y, activations="relu", inits=["he"], depths=[2], width=8,
                                 seed=0)
    with pytest.raises(TypeError, match="y must be"):
        interactive.profile_grid(x, y[:3], activations=["relu"], inits=["he"], depths=[2],
                                 width=8, seed=0)
    with pytest.raises(ValueError, match="unknown init scheme"):
        interactive.variance_grid(x, y, activations=["relu"], inits=["nope"], depth=2, width=8,
                                  seed=0)
    g = interactive.profile_grid(x, y, activations=["relu"], inits=["he"], depths=[2],
                                 width=8, seed=0)
    with pytest.raises(ValueError, match="give exactly the keys"):
        g.row(act="relu")
    with pytest.raises(ValueError, match="no grid point"):
        g.row(act="relu", init="he", depth=7)
