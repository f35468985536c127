"""Tests of lib.diagnose: the rules on hand-made reports, the built-in examples, the
chapter links, the fix of every rule (applied, it must improve the measurement), bad input."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import diagnose as dg
from lib import init, networks, probes

ROOT = Path(__file__).resolve().parent.parent


def row(name, wg=1.0, og=1.0, wn=1.0, sat=math.nan, dead=0.0, act="relu", **kw):
    r = probes.LayerStats(name, "Linear", act, 0.0, 1.0, 0.0, 1.0, sat, dead, wg, og, False,
                          weight_norm=wn, fan_in=64, numel=64 * 64)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_rules_on_handmade_reports():
    body = [row("a"), row("b"), row("top"), row("out")]
    assert dg.diagnose(body).healthy
    # Just inside and just outside each threshold; the reference is 'top' (before the output).
    assert dg.diagnose([row("a", og=2e-3), *body[1:]]).healthy
    # a small backward signal with a normal relative update: the forward signal shrank as
    # much, and the layer still learns at the top's rate (a note, no verdict)
    small_signal = dg.diagnose([row("a", og=5e-4), *body[1:]])
    assert small_signal.healthy and "forward signal" in small_signal.layers[0].note
    assert dg.diagnose([row("a", og=5e-4, wg=5e-4), *body[1:]]).labels == ["vanishing"]
    assert dg.diagnose([row("a", wg=5e-4), *body[1:]]).labels == ["vanishing"]
    # where the update is not judged (a layer feeding a norm layer) the signal decides
    normed = [row(n, feeds_norm=True) for n in ("a", "b", "top")] + [row("out")]
    normed[0].output_grad_norm = 5e-4
    assert dg.diagnose(normed).labels == ["vanishing"]
    assert dg.diagnose([row("a", og=2e3), *body[1:]]).labels == ["exploding"]
    assert dg.diagnose([row("a", dead=0.5), *body[1:]]).labels == ["dead"]
    assert dg.diagnose([row("a", sat=0.6, act="tanh"), *body[1:]]).labels == ["saturated"]
    assert dg.diagnose([row("a", wn=4 * 64), *body[1:]]).labels == ["large-weights"]
    assert dg.diagnose([row("a", time_grad_ratio=1e-5), *body[1:]]).labels == ["vanishing"]
    # Sum instead of mean reduction scales every gradient alike: same verdict.
    scaled = [row(r.name, wg=256 * r.weight_grad_norm, og=256 * r.output_grad_norm)
              for r in [row("a", og=5e-4, wg=5e-4), *body[1:]]]
    assert dg.diagnose(scaled).labels == ["vanishing"]
    # Exempt: attention query/key (tiny at init by design); a layer feeding a norm layer.
    assert dg.diagnose([row("a", og=1e-6, wg=1e-6, role="query"), *body[1:]]).healthy
    assert dg.diagnose([row("a", wg=1e-6, wn=40 * 64, feeds_norm=True), *body[1:]]).healthy
    # No gradient anywhere; a layer without one; a frozen layer is not a problem.
    nograd = [row(r.name, wg=math.nan, og=math.nan) for r in body]
    assert dg.diagnose(nograd).labels == ["no-gradient"]
    assert dg.diagnose([row("a", wg=math.nan), *body[1:]]).labels == ["no-gradient"]
    assert dg.diagnose([row("a", wg=math.nan, frozen=True), *body[1:]]).healthy
    strict = dg.Thresholds(dead_fraction=0.2)
    assert dg.diagnose([row("a", dead=0.25), *body[1:]], thresholds=strict).labels == ["dead"]


def test_every_chapter_link_exists_in_the_book():
    assert set(dg.CHAPTERS) == set(dg.KINDS)
    for kind, (title, url) in dg.CHAPTERS.items():
        page, label = re.fullmatch(r".*/book/(\w+)\.html#([\w-]+)", url).groups()
        text = (ROOT / "book" / f"{page}.md").read_text()
        assert f"({label})=\n# {title}\n" in text, (kind, url)
        assert dg.LABELS[kind] == label


@pytest.fixture(scope="module")
def diagnoses() -> dict[str, dg.Diagnosis]:
    return {name: dg.diagnose_model(*factory(seed=0)) for name, factory in dg.examples().items()}


@pytest.mark.parametrize("name, kind, chapter", [
    ("sigmoid_stack", "vanishing", "ch-chain-rule"),
    ("exploding_init", "exploding", "ch-init"),
    ("dead_relu", "dead", "ch-dying-relu"),
    ("saturated_tanh", "saturated", "ch-sigmoid-tanh"),
])
def test_broken_examples_are_diagnosed(diagnoses, name, kind, chapter):
    d = diagnoses[name]
    assert d.primary == kind, d.summary()
    assert d.issue(kind).chapter == chapter
    assert kind.upper() in d.summary() and chapter in d.summary() and "https://" in d.summary()
    assert kind in d.table()


@pytest.mark.parametrize("name", ["small_cnn", "healthy_mlp"])
def test_healthy_examples_are_called_healthy(diagnoses, name):
    assert diagnoses[name].healthy, diagnoses[name].summary()
    assert diagnoses[name].coverage == 1.0


# --- every fix, applied, improves what it was meant to fix ------------------------------

def test_fix_vanishing_relu_and_he(diagnoses):
    before = diagnoses["sigmoid_stack"]
    assert "ReLU" in before.issue("vanishing").fix
    _, x, y = dg.examples()["sigmoid_stack"](seed=0)
    after = dg.diagnose_model(networks.mlp(10, 64, "relu", init="he", seed=0), x, y)
    assert after.healthy and after.signal_ratio > 1e3 * before.signal_ratio


def test_fix_exploding_he_init(diagnoses):
    before = diagnoses["exploding_init"]
    assert "He" in before.issue("exploding").fix
    model, x, y = dg.examples()["exploding_init"](seed=0)
    init.apply(model, "he", seed=0)
    after = dg.diagnose_model(model, x, y)
    assert after.healthy and after.signal_ratio < before.signal_ratio / 1e3


def test_fix_saturated_and_large_weights_xavier(diagnoses):
    before = diagnoses["saturated_tanh"]
    assert "Xavier" in before.issue("saturated").fix and "large-weights" in before.labels
    model, x, y = dg.examples()["saturated_tanh"](seed=0)
    init.apply(model, "xavier_normal", seed=0)
    after = dg.diagnose_model(model, x, y)
    assert after.healthy
    assert max(v.saturated for v in after.layers[:-1]) < 0.1 * max(
        v.saturated for v in before.layers[:-1])
    assert max(v.gain for v in after.layers) < before.thresholds.large_gain


def test_fix_dead_lower_learning_rate(diagnoses):
    from lib import data, training

    before = diagnoses["dead_relu"]
    assert "lower the learning rate" in before.issue("dead").fix
    _, x, y = dg.examples()["dead_relu"](seed=0)
    model = networks.mlp(6, 64, "relu", init="he", seed=0)
    training.train(model, data.digits(seed=0), steps=20, lr=0.003, optimizer="adam",
                   batch_size=64, seed=0, eval_every=20, progress=False)
    after = dg.diagnose_model(model, x, y)
    assert "dead" not in after.labels
    assert max(v.dead for v in after.layers[:-1]) < max(v.dead for v in before.layers[:-1])


def test_fix_non_finite_and_no_gradient():
    model = networks.mlp(3, 16, "relu", in_features=8, init="he", seed=0)
    x, y = torch.randn(32, 8), torch.randint(0, 10, (32,))
    with torch.no_grad():
        model.layer2.linear.weight[1, 2] = math.inf
    before = dg.diagnose_model(model, x, y)
    assert before.labels == ["non-finite"] and before.issue("non-finite").layers == (
        "layer2.linear",)
    with torch.no_grad():  # the fix: replace the value where it first appears
        model.layer2.linear.weight[1, 2] = 0.0
    assert dg.diagnose_model(model, x, y).healthy
    with probes.watch(model) as rec:
        model(x)  # forward only
    assert dg.diagnose(rec.report()).labels == ["no-gradient"]
    with probes.watch(model) as rec:  # the fix: run the backward pass inside the probe
        nn.functional.cross_entropy(model(x), y).backward()
    assert dg.diagnose(rec.report()).healthy


class Unordered(nn.Module):
    """Registers its layers in another order than its forward calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)
        self.body = nn.Linear(4, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class Miswired(nn.Module):
    """Its second layer does not fit its first: the model's fault, not the input's."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 16)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_foreign_inputs_and_outputs():
    """Registration order, seq-first RNNs, keyword inputs and ModelOutput-like outputs."""
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    assert dg.diagnose_model(Unordered(), x, y).layers  # x fits body, the first called

    class SeqFirst(nn.Module):  # nn.LSTM's default layout: (time, batch, features)
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.out = nn.LSTM(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.out(self.rnn(x)[0][-1])

    d = dg.diagnose_model(SeqFirst(), torch.randn(6, 5, 4), y)
    assert [v.name for v in d.layers] == ["rnn[l0]", "out"]

    class Keywords(nn.Module):  # model(**x), returning an object with .logits
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(10, 8), nn.Linear(8, 3)

        def forward(self, input_ids, attention_mask):
            h = (self.emb(input_ids) * attention_mask[..., None]).mean(1)
            return type("Output", (), {"logits": self.out(h)})()

    ids = torch.randint(0, 10, (5, 7))
    d = dg.diagnose_model(Keywords(), {"input_ids": ids, "attention_mask": torch.ones(5, 7)}, y)
    assert [v.name for v in d.layers] == ["emb", "out"] and math.isfinite(d.loss)


def test_bad_inputs_raise():
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    for call, exc, match in [
        (lambda: dg.diagnose_model("not a model", x, y), TypeError, "model"),
        (lambda: dg.diagnose_model(model, [[1.0]], y), TypeError, "x"),
        (lambda: dg.diagnose_model(model, x, None), TypeError, "y"),
        (lambda: dg.diagnose_model(model, x, y[:3]), ValueError, "class labels y"),
        (lambda: dg.diagnose_model(model, x[0, 0], y), ValueError, "scalar"),
        (lambda: dg.diagnose_model(model, {}, y), ValueError, "mapping"),
        (lambda: dg.diagnose_model(model, {"x": x * math.nan}, y), ValueError, "finite"),
        (lambda: dg.diagnose_model(model, x[:0], y[:0]), ValueError, "empty"),
        (lambda: dg.diagnose_model(model, x * math.nan, y), ValueError, "finite"),
        (lambda: dg.diagnose_model(model, x, y, loss_fn="mse"), TypeError, "loss_fn"),
        (lambda: dg.diagnose_model(nn.ReLU(), x, y), ValueError, "no layer"),
        (lambda: dg.diagnose_model(model, torch.randn(5, 7), y), ValueError, "4 features"),
        (lambda: dg.diagnose_model(Unordered(), torch.randn(5, 7), y), ValueError,
         "x does not fit layer 'body'"),
        (lambda: dg.diagnose_model(Unordered(), torch.randint(0, 3, (5, 4)), y), TypeError,
         "x must be floating"),
        (lambda: dg.diagnose_model(Miswired(), x, y), dg.ModelError,
         "forward pass failed in layer 'head'"),
        (lambda: dg.diagnose_model(model, x, y.float() * math.nan), ValueError, "y must be finite"),
        (lambda: dg.diagnose_model(model, x, torch.randn(5, 2)), ValueError,
         "regression target y"),
        (lambda: dg.diagnose_model(model, x, y, lambda o, t: o.sum() / 0 + t.foo),
         dg.ModelError, "loss failed"),
        (lambda: dg.diagnose("a report"), TypeError, "report"),
        (lambda: dg.diagnose([]), ValueError, "empty"),
        (lambda: dg.diagnose([{"name": "x"}]), TypeError, r"report\[0\]"),
        (lambda: dg.diagnose([row("a")], thresholds={"dead_fraction": 0.1}), TypeError,
         "thresholds"),
        (lambda: dg.diagnose([row("a")], parameters=[1]), TypeError, "parameters"),
        (lambda: dg.Thresholds(dead_fraction=1.5), ValueError, "dead_fraction"),
        (lambda: dg.Thresholds(vanishing_ratio=-1), ValueError, "vanishing_ratio"),
        (lambda: dg.Thresholds(large_gain=math.nan), ValueError, "large_gain"),
        (lambda: dg.examples()["healthy_mlp"](seed=-1), ValueError, "seed"),
        (lambda: dg.examples()["healthy_mlp"](seed=1.5), TypeError, "seed"),
        (lambda: dg.diagnose([row("a")]).issue("sleepy"), ValueError, "kind"),
    ]:
        with pytest.raises(exc, match=match):
            call()


def test_a_user_error_in_the_model_even_system_exit_is_a_model_error():
    class Quits(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            raise SystemExit(0)

    with pytest.raises(dg.ModelError, match="SystemExit"):
        dg.diagnose_model(Quits(), torch.randn(3, 2), torch.randint(0, 2, (3,)))


@pytest.mark.parametrize("kw, exc", [({"channels": 0}, ValueError), ({"channels": 2.5}, TypeError),
                                     ({"channels": True}, TypeError), ({"classes": 1}, ValueError)])
def test_small_cnn_refuses_bad_sizes(kw, exc):
    from lib.diagnose.examples import SmallCNN

    with pytest.raises(exc, match=next(iter(kw))):
        SmallCNN(**kw)
