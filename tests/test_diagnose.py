"""Tests of lib.diagnose: the rules on every built-in example, the CLI, and bad input."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import diagnose as dg
from lib import probes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def diagnoses() -> dict[str, dg.Diagnosis]:
    return {name: dg.diagnose_model(*factory(seed=0)) for name, factory in dg.examples().items()}


def test_examples_cover_every_problem_and_a_cnn():
    names = set(dg.examples())
    assert {"sigmoid_stack", "exploding_init", "dead_relu", "saturated_tanh", "small_cnn",
            "healthy_mlp"} <= names
    model, x, _ = dg.examples()["small_cnn"]()
    assert any(isinstance(m, nn.Conv2d) for m in model.modules()) and x.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("name, kind, chapter", [
    ("sigmoid_stack", "vanishing", "ch-chain-rule"),
    ("exploding_init", "exploding", "ch-init"),
    ("dead_relu", "dead", "ch-dying-relu"),
    ("saturated_tanh", "saturated", "ch-sigmoid-tanh"),
])
def test_broken_examples_are_diagnosed(diagnoses, name, kind, chapter):
    d = diagnoses[name]
    assert not d.healthy
    assert d.primary == kind, d.summary()
    assert d.issue(kind).chapter == chapter
    assert kind.upper() in d.summary() and chapter in d.summary()
    assert kind in d.table()


def test_sigmoid_stack_vanishes_only_in_the_early_layers(diagnoses):
    d = diagnoses["sigmoid_stack"]
    assert d.labels == ["vanishing"]
    assert d.gradient_ratio < 1e-6
    flagged = d.issue("vanishing").layers
    assert flagged[0] == "layer1.linear" and "output" not in flagged
    # A sigmoid stack is told to change its activation, and pointed to the ReLU chapter.
    assert "ReLU" in d.issue("vanishing").fix and "ch-relu" in d.issue("vanishing").see_also


def test_exploding_example_is_caught_by_the_absolute_bound(diagnoses):
    d = diagnoses["exploding_init"]
    assert d.labels == ["exploding"]
    # Forward growth and backward growth cancel in |dL/dW|: its ratio stays near 1...
    assert 0.1 < d.gradient_ratio < 10
    # ...while the backward signal itself grows by orders of magnitude.
    assert d.signal_ratio > 1e3


def test_dead_example_blocks_the_gradient(diagnoses):
    d = diagnoses["dead_relu"]
    worst = max(v.dead for v in d.layers if not math.isnan(v.dead))
    assert worst > 0.9


@pytest.mark.parametrize("name", ["healthy_mlp", "small_cnn"])
def test_healthy_examples_are_called_healthy(diagnoses, name):
    d = diagnoses[name]
    assert d.healthy and d.labels == [] and d.primary == "healthy"
    assert d.summary().startswith("HEALTHY")
    assert all(v.verdict == "healthy" for v in d.layers)


def test_plain_pytorch_model_works():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    d = dg.diagnose_model(model, x, y)
    assert d.healthy and [v.name for v in d.layers] == ["0", "2"]
    assert math.isfinite(d.loss)
    # A custom loss is used as given.
    d2 = dg.diagnose_model(model, x, y, loss_fn=lambda out, t: (out - t).abs().mean())
    assert d2.loss != pytest.approx(d.loss)


def test_non_finite_is_reported_first():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    d = dg.diagnose_model(model, torch.randn(16, 4), torch.randint(0, 3, (16,)))
    assert d.primary == "non-finite" and d.issue("non-finite").chapter == "ch-norm-residual"


def test_rules_on_handmade_reports():
    def row(name, wg, og, sat=math.nan, dead=0.0, act="relu"):
        return probes.LayerStats(name, "Linear", act, 0.0, 1.0, 0.0, 1.0, sat, dead, wg, og, False)

    healthy = [row("a", 0.5, 0.5), row("b", 1.0, 1.0)]
    assert dg.diagnose(healthy).healthy
    # Just inside and just outside each threshold.
    assert dg.diagnose([row("a", 2e-3, 1.0), row("b", 1.0, 1.0)]).healthy
    assert dg.diagnose([row("a", 5e-4, 1.0), row("b", 1.0, 1.0)]).labels == ["vanishing"]
    assert dg.diagnose([row("a", 50.0, 1.0), row("b", 1.0, 1.0)]).healthy
    assert dg.diagnose([row("a", 150.0, 1.0), row("b", 1.0, 1.0)]).labels == ["exploding"]
    assert dg.diagnose([row("a", 0.01, 2e3), row("b", 0.01, 1.0)]).labels == ["exploding"]
    assert dg.diagnose([row("a", 1, 1, sat=0.4, act="tanh"), row("b", 1, 1)]).healthy
    assert dg.diagnose([row("a", 1, 1, sat=0.6, act="tanh"), row("b", 1, 1)]).labels == ["saturated"]
    assert dg.diagnose([row("a", 1, 1, dead=0.25), row("b", 1, 1)]).healthy
    assert dg.diagnose([row("a", 1, 1, dead=0.35), row("b", 1, 1)]).labels == ["dead"]
    # Stricter thresholds flag what the defaults let pass.
    strict = dg.Thresholds(dead_fraction=0.2)
    assert dg.diagnose([row("a", 1, 1, dead=0.25), row("b", 1, 1)], thresholds=strict).labels == ["dead"]


def test_bad_inputs_raise():
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    with pytest.raises(TypeError, match="model"):
        dg.diagnose_model("not a model", x, y)
    with pytest.raises(TypeError, match="x"):
        dg.diagnose_model(model, [[1.0]], y)
    with pytest.raises(TypeError, match="y"):
        dg.diagnose_model(model, x, None)
    with pytest.raises(ValueError, match="x and y"):
        dg.diagnose_model(model, x, y[:3])
    with pytest.raises(TypeError, match="loss_fn"):
        dg.diagnose_model(model, x, y, loss_fn="mse")
    with pytest.raises(ValueError, match="no layer"):
        dg.diagnose_model(nn.ReLU(), x, y)
    with pytest.raises(dg.ModelError, match="forward pass failed"):
        dg.diagnose_model(model, torch.randn(5, 7), y)
    with pytest.raises(TypeError, match="report"):
        dg.diagnose("a report")
    with pytest.raises(ValueError, match="empty"):
        dg.diagnose([])
    with pytest.raises(TypeError, match=r"report\[0\]"):
        dg.diagnose([{"name": "x"}])
    with pytest.raises(TypeError, match="thresholds"):
        dg.diagnose(probes_report(), thresholds={"dead_fraction": 0.1})
    with pytest.raises(ValueError, match="dead_fraction"):
        dg.Thresholds(dead_fraction=1.5)
    with pytest.raises(ValueError, match="vanishing_ratio"):
        dg.Thresholds(vanishing_ratio=-1)
    with pytest.raises(ValueError, match="seed"):
        dg.examples()["healthy_mlp"](seed=-1)
    with pytest.raises(ValueError, match="kind"):
        dg.diagnose(probes_report()).issue("sleepy")


def probes_report() -> list[probes.LayerStats]:
    model = nn.Sequential(nn.Linear(4, 3))
    with probes.watch(model) as rec:
        model(torch.randn(2, 4)).sum().backward()
    return rec.report()


# --- command line ----------------------------------------------------------------

USER_MODULE = textwrap.dedent("""
    import torch
    from torch import nn

    def flat():
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def other():
        return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))

    def with_batch():
        m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
        return m, torch.randn(16, 5), torch.randn(16, 1)

    def not_a_model():
        return 42

    def raises():
        raise RuntimeError("cannot build")

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x) @ torch.ones(3, 3)
""")


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("user_models", None)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Both command-line runs, started together so that their start-up costs overlap."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    elsewhere = tmp_path_factory.mktemp("cli")
    commands = {"example": (["--example", "sigmoid_stack"], ROOT),
                "unimportable": (["no_such_module_xyz:build"], elsewhere)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "lib.diagnose", *args], cwd=cwd, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, cwd) in commands.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def test_cli_example_via_subprocess(cli_runs):
    r = cli_runs["example"]
    assert r.returncode == 0, r.stderr
    assert "layer1.linear" in r.stdout and "VANISHING" in r.stdout and "ch-chain-rule" in r.stdout


def test_cli_unimportable_target_via_subprocess(cli_runs):
    r = cli_runs["unimportable"]
    assert r.returncode == 2
    assert "cannot import module 'no_such_module_xyz'" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_default_lists_every_example(capsys):
    assert dg.main([]) == 0
    out = capsys.readouterr().out
    for name in dg.examples():
        assert name in out
    assert dg.main(["--list"]) == 0
    assert "sigmoid_stack" in capsys.readouterr().out


def test_cli_user_targets(user_module, capsys):
    assert dg.main(["user_models:flat"]) == 0
    out = capsys.readouterr().out
    assert "8x8 digits (256, 64) with their labels" in out and "HEALTHY" in out
    assert dg.main(["user_models:other", "--input-shape", "20", "--batch", "32"]) == 0
    assert "random N(0, 1) input (32, 20)" in capsys.readouterr().out
    assert dg.main(["user_models:with_batch"]) == 0
    assert "the factory's batch" in capsys.readouterr().out
    assert dg.main([str(user_module / "user_models.py") + ":flat"]) == 0
    capsys.readouterr()
    assert dg.main(["--example", "dead_relu", "--fail-on-issue"]) == 1
    assert "DEAD" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["user_models:missing"], "has no attribute 'missing'"),
    (["user_models:not_a_model"], "must return a torch.nn.Module"),
    (["user_models:raises"], "raised RuntimeError: cannot build"),
    (["user_models:Broken"], "forward pass failed on the digits input"),
    (["user_models:Broken", "--input-shape", "64"], "forward pass failed on random input"),
    (["user_models:other"], "--input-shape"),
    (["user_models"], "MODULE:FACTORY"),
    (["missing_file.py:f"], "no such file"),
    (["--example", "nope"], "unknown example 'nope'"),
    (["--example", "healthy_mlp", "user_models:flat"], "at most one"),
])
def test_cli_errors_exit_2_with_a_message(user_module, capsys, argv, message):
    assert dg.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_cli_bad_shape_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        dg.main(["--example", "healthy_mlp", "--input-shape", "0"])
    assert exc.value.code == 2
    assert "--input-shape" in capsys.readouterr().err
