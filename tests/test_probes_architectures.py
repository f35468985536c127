"""lib.probes on architectures nobody here wrote: Hugging Face GPT-2 and BERT (tiny
configs, random init, no download), PyTorch's nn.TransformerEncoder, nn.LSTM and nn.GRU,
and torchvision-equivalent blocks built here (a ResNet with in-place ReLU and BatchNorm, a
MobileNet/EfficientNet-like block with in-place Hardswish/SiLU, a small ViT with
cls_token/pos_embed). torchvision itself does not import beside the CPU torch build.

The model builders are shared with tests/test_diagnose_architectures.py.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib import diagnose, probes


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: in-place ReLU, BatchNorm, a 1x1 downsample."""
    def __init__(self, cin, cout, stride=1, inplace=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, inplace=True, width=8, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=inplace)
        self.layer1 = nn.Sequential(BasicBlock(width, width, 1, inplace),
                                    BasicBlock(width, width, 1, inplace))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2, inplace),
                                    BasicBlock(2 * width, 2 * width, 1, inplace))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV3/EfficientNet-style block: expand 1x1, depthwise 3x3, project 1x1, BN,
    in-place Hardswish or SiLU."""
    def __init__(self, c, expand=4, act=nn.Hardswish, inplace=True):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), act(inplace=inplace),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), act(inplace=inplace),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.block(x)


class MobileNetLike(nn.Module):
    def __init__(self, act=nn.Hardswish, inplace=True, width=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                  act(inplace=inplace))
        self.blocks = nn.Sequential(*[InvertedResidual(width, 4, act, inplace) for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, classes)
        for m in self.modules():  # torchvision's MobileNetV3 init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


class ViT(nn.Module):
    """A small ViT (timm-style init): patch conv, cls_token, pos_embed, pre-norm encoder."""
    def __init__(self, dim=32, depth=2, heads=2, patch=4, image=16, classes=10):
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class SeqModel(nn.Module):
    """Embedding -> LSTM/GRU -> linear read-out; `last_only` = many-to-one."""
    def __init__(self, rnn="lstm", vocab=20, dim=16, hidden=32, layers=1, bidirectional=False,
                 last_only=False, classes=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[rnn]
        self.rnn = cls(dim, hidden, layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), classes or vocab)
        self.last_only = last_only

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out[:, -1] if self.last_only else out)


def encoder(dim=32, heads=2, depth=2, vocab=50, classes=None):
    """PyTorch's own nn.TransformerEncoder (post-norm, ReLU) with an embedding and a head."""
    layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Embedding(vocab, dim),
                         nn.TransformerEncoder(layer, depth, enable_nested_tensor=False),
                         nn.Linear(dim, classes or vocab))


def gpt2(n_layer=2, dim=32, vocab=64, positions=16):
    from transformers.models.gpt2 import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=n_layer, n_embd=dim, n_head=2, vocab_size=vocab, n_positions=positions,
                     bos_token_id=0, eos_token_id=0, loss_type="ForCausalLM")
    return GPT2LMHeadModel(cfg)


def bert(n_layer=2, dim=32, vocab=64, positions=16):
    from transformers.models.bert import BertConfig, BertForMaskedLM
    cfg = BertConfig(num_hidden_layers=n_layer, hidden_size=dim, num_attention_heads=2,
                     intermediate_size=2 * dim, vocab_size=vocab, max_position_embeddings=positions,
                     pad_token_id=0, loss_type="ForMaskedLM")
    return BertForMaskedLM(cfg)


class HF(nn.Module):
    """A Hugging Face model as a plain tokens -> logits module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens).logits


def seq_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


IMAGES = (16, 3, 16, 16)
VOCAB = 20


def batch(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "image":
        return torch.randn(IMAGES, generator=g), torch.randint(0, 10, (IMAGES[0],), generator=g)
    tokens = torch.randint(0, VOCAB, (8, 12), generator=g)
    return tokens, tokens


#: name -> (builder, batch kind, loss)
ZOO = {
    "resnet": (lambda: ResNet(), "image", F.cross_entropy),
    "mobilenet": (lambda: MobileNetLike(nn.Hardswish), "image", F.cross_entropy),
    "efficientnet": (lambda: MobileNetLike(nn.SiLU), "image", F.cross_entropy),
    "vit": (lambda: ViT(), "image", F.cross_entropy),
    "lstm": (lambda: SeqModel("lstm", vocab=VOCAB), "tokens", seq_loss),
    "gru": (lambda: SeqModel("gru", vocab=VOCAB, layers=2, bidirectional=True), "tokens",
            seq_loss),
    "transformer": (lambda: encoder(vocab=VOCAB), "tokens", seq_loss),
    "gpt2": (lambda: HF(gpt2(vocab=VOCAB)), "tokens", seq_loss),
    "bert": (lambda: HF(bert(vocab=VOCAB)), "tokens", seq_loss),
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ZOO[name][0]()


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=F.cross_entropy,
          **kw) -> probes.Recorder:
    with probes.watch(model, **kw) as rec:
        loss(model(x), y).backward()
    return rec


# --- every parameter covered, gradients exact ----------------------------------------

@pytest.mark.parametrize("name", list(ZOO))
def test_every_parameter_is_covered_with_its_exact_gradient(name):
    model = build(name)
    x, y = batch(ZOO[name][1])
    rec = probe(model, x, y, ZOO[name][2])
    assert rec.coverage() == 1.0
    rows = rec.parameters()
    named = dict(model.named_parameters())
    assert {r.name for r in rows} == set(named)  # each tensor once (tied ones too)
    for r in rows:
        g = named[r.name].grad
        if g is None:
            assert r.grad_passes == 0 and math.isnan(r.grad_norm), r.name
        else:
            assert r.grad_passes == 1, r.name
            assert r.grad_norm == pytest.approx(float(g.double().norm()), rel=1e-5, abs=1e-12)
    # Every parameterised module that took part has a row in the layer report.
    reported = {r.name.split("[")[0] for r in rec.report()}
    for mname, m in probes.layer_modules(model):
        if any(p.grad is not None for p in m.parameters(recurse=False)):
            assert mname in reported, mname


def test_recurrent_layers_get_a_row_per_layer_and_direction_and_a_gradient_through_time():
    model = build("gru")
    x, y = batch("tokens")
    rec = probe(model, x, y, seq_loss)
    names = [r.name for r in rec.report()]
    assert names == ["embed", "rnn[l0]", "rnn[l0_reverse]", "rnn[l1]", "rnn[l1_reverse]", "head"]
    rnn = {r.name: r for r in rec.report()}
    g = model.rnn.weight_hh_l1_reverse.grad
    g2 = model.rnn.weight_ih_l1_reverse.grad
    expect = math.sqrt(float(g.double().norm()) ** 2 + float(g2.double().norm()) ** 2)
    assert rnn["rnn[l1_reverse]"].weight_grad_norm == pytest.approx(expect, rel=1e-6)
    steps = rec.through_time()["rnn"]
    assert steps.shape == (x.shape[1],) and bool((steps > 0).all())


def test_attention_projections_embeddings_and_bare_parameters_are_reported():
    vit = build("vit")
    x, y = batch("image")
    rec = probe(vit, x, y)
    rows = {r.name: r for r in rec.report()}
    assert "blocks.layers.0.self_attn" in rows  # in_proj (q, k, v)
    assert "blocks.layers.0.self_attn.out_proj" in rows  # used without being called
    params = {p.name: p for p in rec.parameters()}
    for bare in ("cls_token", "pos_embed"):
        assert params[bare].role == "bare" and params[bare].grad_passes == 1
    assert params["blocks.layers.0.norm1.weight"].role == "norm"
    bert = build("bert")
    tokens, _ = batch("tokens")
    rows = {r.name: r for r in probe(bert, tokens, tokens, seq_loss).report()}
    assert rows["model.bert.encoder.layer.0.attention.self.query"].role == "query"
    assert rows["model.bert.encoder.layer.0.attention.self.key"].role == "key"
    assert rows["model.bert.embeddings.word_embeddings"].role == "embedding"


def test_tied_parameters_are_reported_once_and_marked():
    model = build("gpt2")
    x, y = batch("tokens")
    rec = probe(model, x, y, seq_loss)
    wte = [p for p in rec.parameters() if p.name == "model.transformer.wte.weight"]
    assert len(wte) == 1 and wte[0].tied == ("model.lm_head.weight",)
    assert not any(p.name == "model.lm_head.weight" for p in rec.parameters())
    rows = {r.name: r for r in rec.report()}
    assert rows["model.lm_head"].tied == ("model.transformer.wte.weight",)
    assert rows["model.transformer.wte"].tied == ("model.lm_head.weight",)
    assert "(tied)" in rec.table()


def test_hugging_face_and_functional_activations_are_recognised():
    rows = {r.name: r for r in probe(build("gpt2"), *batch("tokens"), seq_loss).report()}
    assert rows["model.transformer.h.0.mlp.c_fc"].activation == "gelu"  # NewGELUActivation
    assert not math.isnan(rows["model.transformer.h.0.mlp.c_fc"].dead)
    rows = {r.name: r for r in probe(build("bert"), *batch("tokens"), seq_loss).report()}
    assert rows["model.bert.encoder.layer.0.intermediate.dense"].activation == "gelu"

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.c(torch.tanh(self.b(self.a(x).relu())))

    rec = probe(Functional(), torch.randn(16, 4), torch.randint(0, 2, (16,)))
    assert [r.activation for r in rec.report()] == ["relu", "tanh", None]
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    model.forward = lambda x: model[1](F.silu(model[0](x)))
    assert probe(model, torch.randn(3, 4), torch.randint(0, 2, (3,))).report()[0].activation \
        == "silu"


def test_registering_another_activation_class():
    from lib.activations import kinds

    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    model = nn.Sequential(nn.Linear(3, 4), Sine(), nn.Linear(4, 2))
    assert probe(model, torch.randn(5, 3), torch.randint(0, 2, (5,))).report()[0].activation is None
    kinds.register("sine", [Sine], forward=torch.sin)
    try:
        rec = probe(model, torch.randn(5, 3), torch.randint(0, 2, (5,)))
        assert rec.report()[0].activation == "sine"
    finally:
        kinds._KINDS.pop("sine")
        kinds._BY_CLASS.pop(kinds._dotted(Sine))


# --- in-place activations --------------------------------------------------------------

STAT_FIELDS = ("pre_mean", "pre_std", "act_mean", "act_std", "saturated", "dead",
               "weight_grad_norm", "output_grad_norm")


@pytest.mark.parametrize("make", [lambda ip: ResNet(inplace=ip),
                                  lambda ip: MobileNetLike(nn.Hardswish, inplace=ip),
                                  lambda ip: MobileNetLike(nn.SiLU, inplace=ip)],
                         ids=["resnet-relu", "mobilenet-hardswish", "efficientnet-silu"])
def test_in_place_and_out_of_place_give_identical_statistics(make):
    x, y = batch("image")
    reports = []
    for inplace in (True, False):
        torch.manual_seed(0)
        reports.append(probe(make(inplace), x, y).report())
    a, b = reports
    assert [r.name for r in a] == [r.name for r in b]
    for ra, rb in zip(a, b):
        for f in STAT_FIELDS:
            assert getattr(ra, f) == pytest.approx(getattr(rb, f), rel=1e-6, abs=1e-9,
                                                   nan_ok=True), (ra.name, f)
    # The pre-activation is the activation's input, not its (overwritten) output.
    torch.manual_seed(0)
    model = make(True)
    first = probe(model, x, y).report()[0]
    if hasattr(model, "stem"):
        z = model.stem[1](model.stem[0](x)).detach()
    else:
        z = model.bn1(model.conv1(x)).detach()
    assert first.pre_std == pytest.approx(float(z.double().std(unbiased=False)), rel=1e-4)
    assert first.pre_std != pytest.approx(first.act_std, rel=1e-3)


# --- gradients read at backward time --------------------------------------------------

def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_gradients_survive_zero_grad_and_are_per_pass_under_accumulation():
    model = _mlp()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with probes.watch(model) as rec:
        F.cross_entropy(model(x), y).backward()
        one = float(model[0].weight.grad.norm())
        model.zero_grad()
    assert rec.report()[0].weight_grad_norm == pytest.approx(one, rel=1e-6)
    # Two passes accumulated into .grad: the report gives the RMS of the per-pass norms.
    x2 = torch.randn(6, 4)
    model.zero_grad()
    F.cross_entropy(model(x2), y).backward()
    two = float(model[0].weight.grad.norm())
    model.zero_grad()
    with probes.watch(model) as rec:
        F.cross_entropy(model(x), y).backward()
        F.cross_entropy(model(x2), y).backward()
    assert rec.report()[0].weight_grad_norm == pytest.approx(math.sqrt((one**2 + two**2) / 2),
                                                             rel=1e-6)
    # A forward-only block after a backward pass: no gradient, not the stale .grad.
    with probes.watch(model) as rec:
        model(x)
    assert model[0].weight.grad is not None and math.isnan(rec.report()[0].weight_grad_norm)
    with probes.watch(model) as rec, torch.no_grad():
        model(x)
    d = diagnose.diagnose(rec.report(), parameters=rec.parameters())
    assert d.labels == ["no-gradient"] and "no gradient was recorded" in d.summary()


def test_a_module_called_twice_reports_both_calls():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(5, 4), torch.randint(0, 2, (5,))
    grads = []
    h1 = lin(x)
    h1.register_hook(lambda g: grads.append(g))
    h2 = lin(torch.tanh(h1))
    h2.register_hook(lambda g: grads.append(g))
    F.cross_entropy(model[4](torch.tanh(h2)), y).backward()
    rec = probe(model, x, y)
    row = rec.report()[0]
    assert row.calls == 2
    expect = math.sqrt(sum(float(g.double().norm()) ** 2 for g in grads))
    assert row.output_grad_norm == pytest.approx(expect, rel=1e-5)


# --- dtypes, non-finite values, samples, names --------------------------------------

def test_float16_sums_do_not_overflow():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Sigmoid(), nn.Linear(256, 10)).half()
    x = (4 * torch.randn(512, 64)).half()
    with probes.watch(model) as rec:
        model(x).float().sum().backward()
    rows = rec.report()
    assert not any(r.nonfinite for r in rows)
    ref = model[0](x).detach().double()
    assert rows[0].pre_std == pytest.approx(float(ref.std(unbiased=False)), rel=1e-3)


def test_non_finite_values_are_traced_to_the_first_module_in_forward_order():
    model = build("resnet")
    with torch.no_grad():
        model.layer2[0].conv1.weight[0, 0, 0, 0] = math.nan
    x, y = batch("image")
    rec = probe(model, x, y)
    first = [r.name for r in rec.report() if r.first_nonfinite]
    assert first == ["layer2.0.conv1"]
    d = diagnose.diagnose(rec.report(), parameters=rec.parameters())
    assert d.labels == ["non-finite"] and d.issue("non-finite").layers == ("layer2.0.conv1",)
    assert "layer2.0.conv1.weight" in d.issue("non-finite").evidence


def test_keep_samples_is_a_seeded_random_sample():
    model = build("resnet")
    x, y = batch("image")
    a = probe(model, x, y, keep_samples=200, seed=1).samples("conv1")["pre"]
    b = probe(model, x, y, keep_samples=200, seed=1).samples("conv1")["pre"]
    c = probe(model, x, y, keep_samples=200, seed=2).samples("conv1")["pre"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # drawn from the whole tensor: from more than one image and more than one channel
    full = model.bn1(model.conv1(x)).detach()
    where = [(full == v).nonzero()[0].tolist() for v in a[:50]]
    assert len({w[0] for w in where}) > 1 and len({w[1] for w in where}) > 1


def test_tables_show_full_paths_abbreviated_from_the_left_never_ambiguously():
    rec = probe(build("gpt2"), *batch("tokens"), seq_loss)
    table = rec.table(width=20)
    names = [line.split()[0] for line in table.splitlines()[2:]]
    assert len(set(names)) == len(names)
    full = [r.name for r in rec.report()]
    for short, long in zip(names, full):
        assert long.endswith(short.lstrip("…"))


def test_a_compiled_model_is_refused_with_the_way_out():
    class OptimizedModule(nn.Module):  # what torch.compile returns, without compiling
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    with pytest.raises(TypeError, match="_orig_mod"):
        probes.watch(OptimizedModule(_mlp())).__enter__()


@pytest.mark.parametrize("call, exc, match", [
    (lambda: probes.dead_units(_mlp(), torch.full((3, 4), math.nan)), ValueError, "finite"),
    (lambda: probes.active_fraction(_mlp(), torch.full((3, 4), math.nan)), ValueError, "finite"),
    (lambda: probes.active_fraction(_mlp(), torch.randn(3, 5)), ValueError, "4 features"),
    (lambda: probes.gradient_norms(_mlp(), torch.randn(3, 4), torch.randn(3)), ValueError,
     "target"),
    (lambda: probes.gradient_norms(_mlp(), torch.randn(3, 4), torch.randn(3, 1)), ValueError,
     "target"),
    (lambda: probes.gradient_norms(_mlp(), torch.randn(3, 4).double(), torch.zeros(3).long()),
     TypeError, "dtype"),
    (lambda: probes.watch(_mlp(), keep_samples=-1).__enter__(), ValueError, "keep_samples"),
    (lambda: probes.watch(_mlp(), functional="yes").__enter__(), TypeError, "functional"),
    (lambda: probes.Recorder(_mlp()).table(width=2), ValueError, "width"),
    (lambda: probes.jacobian_singular_values(nn.Linear(2, 2), torch.tensor([math.nan, 1.0])),
     ValueError, "finite"),
])
def test_bad_input_is_rejected_by_name(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
