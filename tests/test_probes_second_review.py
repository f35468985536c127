"""A second hostile review of the probes on models lib never built.

Each case was a silent wrong answer or a raw torch error before: two backward
passes through one retained graph, functional activations in the dead-unit
count, NaN targets, a weight-tied output head judged as a Linear layer,
custom models fed the wrong input, model outputs that are not one tensor,
and activation checkpointing. Checked against hand-computed values.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_diagnose import Miswired, Unordered  # registration order is not call order
from torch import nn
from torch.utils.checkpoint import checkpoint

from lib import diagnose as dg
from lib import probes


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_two_backward_passes_through_a_retained_graph_are_two_passes():
    m, x = _mlp(), torch.randn(5, 4)
    with probes.watch(m) as rec:
        out = m(x)
        out.pow(2).sum().backward(retain_graph=True)
        g1 = m[0].weight.grad.clone()
        out.sum().backward()
        g2 = m[0].weight.grad - g1
    rms = math.sqrt((float(g1.double().norm()) ** 2 + float(g2.double().norm()) ** 2) / 2)
    assert rec.column("weight_grad_norm")[0] == pytest.approx(rms, rel=1e-5)
    row = [p for p in rec.parameters() if p.name == "0.weight"][0]
    assert row.grad_passes == 2 and row.grad_norm == pytest.approx(rms, rel=1e-5)


class _Functional(nn.Module):
    """A hidden layer whose units are all dead, activated by a function call."""

    def __init__(self, act) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Linear(4, 6), nn.Linear(6, 2), act
        with torch.no_grad():
            self.a.bias[:4] = -100.0  # units 0-3 never fire

    def forward(self, x):
        return self.b(self.act(self.a(x)))


# Looked up when called, as in a forward that writes torch.relu(h) (a reference bound
# before watch() starts, such as self.act = torch.relu, is documented as not seen).
@pytest.mark.parametrize("act", [lambda z: torch.relu(z), lambda z: F.relu(z),
                                 lambda z: z.relu()],
                         ids=["torch.relu", "F.relu", "Tensor.relu"])
def test_dead_units_behind_functional_activations(act):
    torch.manual_seed(0)
    dead = probes.dead_units(_Functional(act), torch.randn(32, 4))
    assert list(dead) == ["a"]
    assert dead["a"].tolist() == [True] * 4 + [False] * 2


@pytest.mark.parametrize("train", [True, False])
def test_dead_units_behind_transformer_layers_default_relu(train):
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    with torch.no_grad():
        enc.linear1.bias[:10] = -100.0
    enc.train(train)
    dead = probes.dead_units(enc, torch.randn(3, 5, 8))
    assert int(dead["linear1"].sum()) == 10 and bool(dead["linear1"][:10].all())


def test_nan_targets_are_refused_by_name():
    m, x = _mlp(), torch.randn(5, 4)
    y = torch.full((5, 2), math.nan)
    with pytest.raises(ValueError, match="y must be finite"):
        probes.gradient_norms(m, x, y)
    with pytest.raises(ValueError, match="y must be finite"):
        dg.diagnose_model(m, x, y)


class _TiedLM(nn.Module):
    def __init__(self, vocab: int = 50, width: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)  # N(0, 1): gain sqrt(width) as a Linear
        self.mid = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.relu(self.mid(self.emb(x)))).mean(1)


def test_a_head_tied_to_an_embedding_is_an_embedding_not_a_large_linear():
    torch.manual_seed(0)
    x, y = torch.randint(0, 50, (8, 6)), torch.randint(0, 50, (8,))
    d = dg.diagnose_model(_TiedLM(), x, y)
    assert "large-weights" not in {i.kind for i in d.issues}
    with probes.watch(_TiedLM()) as rec:
        F.cross_entropy(rec.model(x), y).backward()
    rows = {r.name: r for r in rec.report()}
    assert rows["head"].role == "embedding" and rows["head"].tied == ("emb.weight",)
    # an untied head with the same weights is a Linear and is judged as one
    untied = _TiedLM()
    untied.head.weight = nn.Parameter(untied.emb.weight.detach().clone())
    assert "large-weights" in {i.kind for i in dg.diagnose_model(untied, x, y).issues}


def test_hugging_face_t5s_tied_lm_head_is_not_called_large():
    tr = pytest.importorskip("transformers")
    cfg = tr.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                      num_decoder_layers=1, num_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = tr.T5ForConditionalGeneration(cfg)
    ids = torch.randint(0, 64, (2, 5))
    x = {"input_ids": ids, "decoder_input_ids": ids}
    d = dg.diagnose_model(model, x, ids)
    flagged = [i.layers for i in d.issues if i.kind == "large-weights"]
    assert not any("lm_head" in name for names in flagged for name in names)


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(4, 2)
        self.emb = nn.Embedding(10, 4)

    def forward(self, x):
        return self.out(self.emb(x)).mean(1)


Y = torch.randint(0, 2, (5,))
BAD = [
    (lambda: probes.gradient_norms(Unordered(), torch.randn(5, 7), Y), ValueError,
     "x does not fit layer 'body'"),
    (lambda: probes.gradient_norms(Unordered(), torch.randint(0, 3, (5, 4)), Y), TypeError,
     "x must be floating"),
    (lambda: probes.gradient_norms(Unordered(), torch.randn(5, 4).double(), Y), TypeError,
     "dtype"),
    (lambda: probes.active_fraction(Unordered(), torch.randn(5, 7)), ValueError,
     "x does not fit layer 'body'"),
    (lambda: probes.jacobian_singular_values(Unordered(), torch.randn(7)), ValueError,
     "x does not fit layer 'body'"),
    (lambda: probes.gradient_norms(_Tokens(), torch.randint(0, 20, (5, 3)) + 10, Y),
     ValueError, r"token ids in 0..9 for layer 'emb'"),
    (lambda: probes.gradient_norms(_Tokens(), torch.randn(5, 3), Y), TypeError,
     "integer token ids"),
    (lambda: dg.diagnose_model(Unordered(), torch.randint(0, 3, (5, 4)), Y), TypeError,
     "x must be floating"),
    (lambda: probes.gradient_norms(Miswired(), torch.randn(5, 4), Y), dg.ModelError,
     "failed in layer 'head'"),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_input_a_custom_model_cannot_take_is_an_argument_error(call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    if exc is not dg.ModelError:  # the message is the whole story: no torch traceback
        err = info.value
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


class _Outputs(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.lin, self.kind = nn.Linear(4, 2), kind

    def forward(self, x):
        o = self.lin(x)
        return {"tuple": (o, x), "dict": {"logits": o, "x": x}, "list": [o],
                "bare": {"scores": o}}[self.kind]


@pytest.mark.parametrize("kind", ["tuple", "dict", "list"])
def test_gradient_norms_reads_outputs_as_diagnose_model_does(kind):
    torch.manual_seed(0)
    m, x = _Outputs(kind), torch.randn(5, 4)
    norms = probes.gradient_norms(m, x, Y)
    expect = F.cross_entropy(m.lin(x), Y)
    m.zero_grad()
    expect.backward()
    assert norms == [pytest.approx(float(m.lin.weight.grad.double().norm()), rel=1e-5)]
    assert isinstance(dg.diagnose_model(m, x, Y), dg.Diagnosis)


def test_an_output_without_logits_says_to_pass_a_loss():
    m = _Outputs("bare")
    for call in (lambda: probes.gradient_norms(m, torch.randn(5, 4), Y),
                 lambda: dg.diagnose_model(m, torch.randn(5, 4), Y)):
        with pytest.raises(TypeError, match=r"model's output.*\['scores'\].*loss_fn"):
            call()


class _Checkpointed(nn.Module):
    def __init__(self, on: bool, reentrant: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.on, self.reentrant = on, reentrant

    def segment(self, h):
        return torch.relu(self.b(torch.tanh(self.a(h))))

    def forward(self, x):
        if self.on:
            return self.c(checkpoint(self.segment, x, use_reentrant=self.reentrant))
        return self.c(self.segment(x))


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_does_not_count_the_recomputed_forward(reentrant):
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    plain = _Checkpointed(False)
    ck = _Checkpointed(True, reentrant)
    ck.load_state_dict(plain.state_dict())
    reports = []
    for m in (plain, ck):
        with probes.watch(m) as rec:
            F.cross_entropy(m(x.clone().requires_grad_(reentrant)), y).backward()
        reports.append(rec.report())
    for a, b in zip(*reports):
        assert (a.name, a.calls) == (b.name, b.calls) == (a.name, 1)
        for f in ("pre_std", "act_mean", "weight_grad_norm", "output_grad_norm"):
            va, vb = getattr(a, f), getattr(b, f)
            assert (math.isnan(va) and math.isnan(vb)) or vb == pytest.approx(va, rel=1e-5)


def test_forward_only_attention_keeps_its_output_projection_row():
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    with probes.watch(enc) as rec, torch.no_grad():
        enc(torch.randn(3, 5, 8))
    assert [r.name for r in rec.report()] == ["self_attn", "self_attn.out_proj", "linear1",
                                              "linear2"]


def test_a_residual_blocks_last_relu_belongs_to_its_main_branch():
    """torchvision's BasicBlock: ``out += identity`` after the shortcut conv, then ReLU."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8)
            self.down = nn.Sequential(nn.Conv2d(3, 8, 1, 2), nn.BatchNorm2d(8))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            out += self.down(x)
            return self.relu(out)

    torch.manual_seed(0)
    with probes.watch(Block()) as rec:
        rec.model(torch.randn(4, 3, 8, 8)).sum().backward()
    act = {r.name: r.activation for r in rec.report()}
    assert act == {"conv1": "relu", "conv2": "relu", "down.0": None}
