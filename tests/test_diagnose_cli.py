"""The command line, python -m lib.diagnose: user targets, --loss, --vocab, --data, and
every bad input as one line on stderr with exit status 2."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lib import diagnose as dg

ROOT = Path(__file__).resolve().parent.parent

USER_MODULE = textwrap.dedent("""
    import sys
    import torch
    from torch import nn

    def flat():
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def other():
        return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))

    def conv():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))

    def lm():
        return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, 50))

    def with_batch():
        m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
        return m, torch.randn(16, 5), torch.randn(16, 1)

    def mismatched():
        m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        return m, torch.randn(16, 5), torch.randint(0, 3, (12,))

    def tokens_wrong_targets():
        m = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10))
        return m, torch.randint(0, 10, (4, 6)), torch.randint(0, 10, (4,))

    def batch():
        return torch.randn(8, 20), torch.randint(0, 3, (8,))

    def my_loss(out, y):
        return nn.functional.cross_entropy(out, y) * 2

    def deep_sigmoid():
        layers = [m for _ in range(12) for m in (nn.Linear(20, 20), nn.Sigmoid())]
        return nn.Sequential(*layers, nn.Linear(20, 3))

    def not_a_model():
        return 42

    def raises():
        raise RuntimeError("cannot build")

    def exits():
        sys.exit(0)

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


def test_cli_in_a_fresh_process_needs_no_sklearn_and_writes_no_pycache(tmp_path):
    (tmp_path / "user_models.py").write_text(USER_MODULE)
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from lib.diagnose.cli import main\n"
            "raise SystemExit(main(['user_models.py:flat']))")
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "HEALTHY" in r.stdout and r.stderr == ""
    assert not (tmp_path / "__pycache__").exists()


def test_cli_user_targets(user_module, capsys):
    assert dg.main(["user_models:flat"]) == 0
    out = capsys.readouterr().out
    assert "random N(0, 1) input (64, 64) (read from its first Linear layer)" in out
    assert "HEALTHY" in out
    assert dg.main(["user_models:other", "--input-shape", "20", "--batch", "32"]) == 0
    assert "random N(0, 1) input (32, 20)" in capsys.readouterr().out
    assert dg.main(["user_models:conv", "--input-shape", "3,8,8"]) == 0
    capsys.readouterr()
    assert dg.main(["user_models:lm"]) == 0  # token ids from the Embedding's size
    out = capsys.readouterr().out
    assert "token ids below 50" in out and "token labels over 50 classes" in out
    assert dg.main(["user_models:lm", "--vocab", "7", "--input-shape", "5"]) == 0
    assert "token ids below 7 (64, 5)" in capsys.readouterr().out
    assert dg.main(["user_models:with_batch"]) == 0
    assert "the factory's batch" in capsys.readouterr().out
    assert dg.main(["user_models:other", "--data", "user_models:batch"]) == 0
    assert "the batch from user_models:batch" in capsys.readouterr().out
    assert dg.main(["user_models:other", "--input-shape", "20", "--loss", "mse"]) == 0
    assert "mean squared error" in capsys.readouterr().out
    assert dg.main(["user_models:other", "--input-shape", "20",
                    "--loss", "user_models:my_loss"]) == 0
    capsys.readouterr()
    assert dg.main([str(user_module / "user_models.py") + ":flat"]) == 0
    capsys.readouterr()


def test_fail_on_issue_exits_1_only_for_a_problem(user_module, capsys):
    assert dg.main(["user_models:flat", "--fail-on-issue"]) == 0
    assert dg.main(["user_models:deep_sigmoid", "--fail-on-issue"]) == 1
    out = capsys.readouterr().out
    assert "VANISHING" in out and "Read first:" in out and "02_chain_rule.html" in out


def test_the_cli_leaves_the_global_random_state_alone(user_module, capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dg.main(["user_models:flat"])
    assert torch.equal(torch.rand(3), expected)
    capsys.readouterr()


@pytest.mark.parametrize("argv", [["--example", "dead_relu"], ["--example", "small_cnn"],
                                  []])
def test_the_cli_leaves_the_rng_state_unchanged_on_examples(argv, capsys):
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    assert dg.main(argv) == 0
    assert torch.equal(torch.random.get_rng_state(), before)
    capsys.readouterr()


def test_cli_argv_must_be_strings(capsys):
    for argv in ("--list", [1, 2], 5):
        assert dg.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: argv must be a list of strings") and err.count("\n") == 1


def test_cli_seed_beyond_64_bits(user_module, capsys):
    assert dg.main(["user_models:other", "--seed", str(2**70)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_cli_examples(capsys):
    assert dg.main(["--list"]) == 0
    assert "sigmoid_stack" in capsys.readouterr().out
    assert dg.main(["--example", "saturated_tanh", "--fail-on-issue"]) == 1
    assert "SATURATED" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["user_models:missing"], "has no attribute 'missing'"),
    (["user_models:not_a_model"], "must return a torch.nn.Module"),
    (["user_models:raises"], "raised RuntimeError: cannot build"),
    (["user_models:exits"], "raised SystemExit"),
    (["user_models:Broken"], "forward pass failed on random N(0, 1) input"),
    (["user_models:mismatched"], "class labels y must have shape"),
    (["user_models:tokens_wrong_targets"], "class labels y must have shape"),
    (["user_models:other", "--data", "user_models:flat"], "must return a tuple (x, y)"),
    (["user_models:other", "--loss", "hinge"], "--loss must be"),
    (["user_models:other", "--loss", "user_models:nope"], "has no attribute"),
    (["user_models"], "MODULE:NAME"),
    (["missing_file.py:f"], "no such file"),
    (["no_such_module_xyz:build"], "cannot import module 'no_such_module_xyz'"),
    (["--example", "nope"], "unknown example 'nope'"),
    (["--example", "healthy_mlp", "user_models:flat"], "at most one"),
    (["--example", "healthy_mlp", "--input-shape", "0"], "shape must be positive"),
    (["user_models:other", "--input-shape", "3,x"], "shape must be positive"),
    (["user_models:other", "--input-shape", "3,,4"], "shape must be positive"),
    (["--batch", "-3"], "positive integer"),
    (["--seed", "x"], "integer >= 0"),
    (["--vocab", "0"], "positive integer"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--batch", "100000000"], "batch size from 1 to"),
    (["user_models:other", "--input-shape", "99999999999999999999"], "at most"),
    (["user_models:other", "--input-shape", "100000,100000,100000"], "at most"),
    (["user_models:other", "--batch", "60000", "--input-shape", "4096"], "smaller --batch"),
    (["--data", "user_models:batch"], "applies to a TARGET"),
    (["--example", "healthy_mlp", "--input-shape", "8"], "applies to a TARGET"),
    (["--list", "--vocab", "10"], "applies to a TARGET"),
    (["user_models:mismatched", "--input-shape", "5"], "returns its own batch"),
])
def test_cli_errors_exit_2_with_one_line(user_module, capsys, argv, message):
    assert dg.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
