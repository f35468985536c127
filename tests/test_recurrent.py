"""Tests of lib.recurrent: gradient through time against autograd, Jacobians, initialisers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lib import networks
from lib import recurrent as R


def _last_sum(batch_first: bool):
    return (lambda o: o[:, -1].pow(2).sum()) if batch_first else (lambda o: o[-1].pow(2).sum())


def _unrolled_grads(rnn: nn.RNN, x: torch.Tensor) -> torch.Tensor:
    """dL/dh_t of a one-layer tanh nn.RNN (batch_first), unrolled by hand with autograd."""
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    b = rnn.bias_ih_l0 + rnn.bias_hh_l0
    h = x.new_zeros(x.shape[0], rnn.hidden_size)
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ w_ih.T + h @ w_hh.T + b)
        h.retain_grad()
        states.append(h)
    h.pow(2).sum().backward()
    return torch.stack([s.grad for s in states])


def test_hidden_gradients_match_hand_unrolled_autograd():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 6, batch_first=True).double()
    x = torch.randn(5, 12, 3, dtype=torch.float64)
    want = _unrolled_grads(rnn, x)
    got = R.hidden_gradients(rnn, x, loss_fn=_last_sum(True), reduce="none")
    torch.testing.assert_close(got, want)
    norms = R.hidden_gradients(rnn, x, loss_fn=_last_sum(True))
    torch.testing.assert_close(norms, want.flatten(1).norm(dim=1))


def test_last_step_gradient_is_direct():
    torch.manual_seed(1)
    rnn = nn.RNN(2, 4).double()
    x = torch.randn(7, 3, 2, dtype=torch.float64)
    out, _ = rnn(x)
    g = R.hidden_gradients(rnn, x, loss_fn=_last_sum(False), reduce="none")
    torch.testing.assert_close(g[-1], 2 * out[-1].detach())


_CELLS = {nn.RNN: nn.RNNCell, nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell}


def _by_cells(m: nn.RNNBase, x: torch.Tensor, loss) -> tuple[list, list]:
    """The states of every step and layer, unrolled with PyTorch's own cell modules
    (weights copied from ``m``), after backward of ``loss`` on the top layer's last state."""
    cells = []
    for k in range(m.num_layers):
        cell = _CELLS[type(m)](m.input_size if k == 0 else m.hidden_size, m.hidden_size).double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(m, f"{name}_l{k}"))
        cells.append(cell)
    lstm = isinstance(m, nn.LSTM)
    state = [None] * m.num_layers
    hs, cs = [], []
    for t in range(x.shape[1]):
        inp, row_h, row_c = x[:, t], [], []
        for k, cell in enumerate(cells):
            state[k] = cell(inp, state[k])
            h, c = state[k] if lstm else (state[k], None)
            h.retain_grad()
            row_h.append(h)
            if lstm:
                c.retain_grad()
                row_c.append(c)
            inp = h
        hs.append(row_h)
        cs.append(row_c)
    loss(inp).backward()
    return hs, cs


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_layers_against_pytorch_cells(cls, batch_first, layers):
    """Every layer's and step's dL/dh_t (and dL/dc_t) equals autograd through PyTorch's
    own cells unrolled by hand; parameter gradients equal the fused module's backward."""
    torch.manual_seed(2)
    kw = {"nonlinearity": "relu"} if cls is nn.RNN and layers == 2 else {}
    m = cls(2, 5, num_layers=layers, batch_first=batch_first, **kw).double()
    x = torch.randn(3, 9, 2, dtype=torch.float64)
    if kw:
        _CELLS[nn.RNN] = lambda i, h: nn.RNNCell(i, h, nonlinearity="relu")
    try:
        hs, cs = _by_cells(m, x, lambda h: h.pow(2).sum())
    finally:
        _CELLS[nn.RNN] = nn.RNNCell
    xs = x if batch_first else x.transpose(0, 1).contiguous()
    loss = _last_sum(batch_first)
    for k in range(layers):
        g = R.hidden_gradients(m, xs, loss_fn=loss, reduce="none", layer=k)
        torch.testing.assert_close(g, torch.stack([row[k].grad for row in hs]))
        if cls is nn.LSTM:
            gc = R.hidden_gradients(m, xs, loss_fn=loss, reduce="none", layer=k, state="c")
            torch.testing.assert_close(gc, torch.stack([row[k].grad for row in cs]))
    m.zero_grad()
    loss(m(xs)[0]).backward()
    own = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    with R._recording(m):
        loss(m(xs)[0]).backward()
    for a, b in zip(own, [p.grad for p in m.parameters()]):
        torch.testing.assert_close(a, b)


def test_projection_top_layer_against_own_kernel():
    """With proj_size (no cell module for it): the top layer's dL/dh_t equals the gradient
    through the module's own forward over the later steps, from h_t as initial state."""
    torch.manual_seed(9)
    m = nn.LSTM(2, 6, proj_size=3).double()
    x = torch.randn(9, 3, 2, dtype=torch.float64)
    loss = _last_sum(False)
    t = 4
    with torch.no_grad():
        _, (h, c) = m(x[:t + 1])
    h = h.clone().requires_grad_(True)
    loss(m(x[t + 1:], (h, c))[0]).backward()
    g = R.hidden_gradients(m, x, loss_fn=loss, reduce="none")
    torch.testing.assert_close(g[t], h.grad[0])


def test_lstm_cell_state_and_projection():
    torch.manual_seed(3)
    m = nn.LSTM(2, 6, proj_size=3, num_layers=2).double()
    x = torch.randn(10, 4, 2, dtype=torch.float64)
    gh = R.hidden_gradients(m, x, loss_fn=_last_sum(False), reduce="none")
    gc = R.hidden_gradients(m, x, loss_fn=_last_sum(False), reduce="none", state="c", layer=0)
    assert gh.shape == (10, 4, 3) and gc.shape == (10, 4, 6)


def test_unbatched_input():
    torch.manual_seed(4)
    m = nn.GRU(2, 4).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    g = R.hidden_gradients(m, x, loss_fn=lambda o: o[-1].sum())
    assert g.shape == (8,)
    gb = R.hidden_gradients(m, x.unsqueeze(1), loss_fn=lambda o: o[-1].sum())
    torch.testing.assert_close(g, gb)


class _CellModel(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell, self.out = cell, nn.Linear(cell.hidden_size, 1)

    def forward(self, x):
        h = None
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.out(h[0] if isinstance(h, tuple) else h)


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_cells_equal_their_layer(cell):
    torch.manual_seed(5)
    c = cell(2, 4).double()
    layer = {nn.RNNCell: nn.RNN, nn.GRUCell: nn.GRU, nn.LSTMCell: nn.LSTM}[cell](
        2, 4, batch_first=True).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(getattr(c, name))
    model = _CellModel(c).double()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    y = torch.randn(3, 1, dtype=torch.float64)
    g_cell = R.hidden_gradients(model, x, y, reduce="none")

    class _LayerModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.out = layer, model.out

        def forward(self, x):
            return self.out(self.rnn(x)[0][:, -1])
    g_layer = R.hidden_gradients(_LayerModel(), x, y, reduce="none")
    torch.testing.assert_close(g_cell, g_layer)


def test_vanilla_rnn_of_lib_networks():
    net = networks.rnn(8, spectral_radius=0.9, activation="identity", seed=0).double()
    x = torch.randn(2, 20, 1, dtype=torch.float64)
    g = R.hidden_gradients(net, x, loss_fn=lambda h: h.sum())
    # linear recurrence with W = 0.9 Q: every step back multiplies by W^T, norm-preserving Q
    assert R.decay_rate(g) == pytest.approx(0.9, rel=1e-6)


def test_input_gradients_bidirectional():
    torch.manual_seed(6)
    m = nn.LSTM(2, 4, bidirectional=True, batch_first=True)
    x = torch.randn(3, 7, 2)
    g = R.input_gradients(m, x, loss_fn=lambda o: o[:, -1].sum())
    assert g.shape == (7,) and (g > 0).all()
    with pytest.raises(ValueError, match="bidirectional"):
        R.hidden_gradients(m, x, loss_fn=lambda o: o.sum())


def test_gradient_through_time_summary():
    rnn = nn.RNN(2, 8, batch_first=True)
    x = torch.randn(4, 25, 2)
    res = R.gradient_through_time(nn.Sequential(rnn), x, loss_fn=lambda o: o[:, -1].sum())
    assert res.module == "0" and res.norms.shape == (25,)
    assert 0 < res.rate < 1 and res.first_to_last < 1


def test_bad_input():
    rnn = nn.RNN(2, 4)
    x = torch.randn(5, 2, 2)
    with pytest.raises(ValueError, match="target= .* or loss_fn="):
        R.hidden_gradients(rnn, x)
    with pytest.raises(TypeError, match="x must be"):
        R.hidden_gradients(rnn, [1, 2], loss_fn=torch.sum)
    with pytest.raises(ValueError, match="layer must be"):
        R.hidden_gradients(rnn, x, loss_fn=lambda o: o.sum(), layer=2)
    with pytest.raises(ValueError, match="state='c'"):
        R.hidden_gradients(rnn, x, loss_fn=lambda o: o.sum(), state="c")
    with pytest.raises(ValueError, match="state"):
        R.hidden_gradients(rnn, x, loss_fn=lambda o: o.sum(), state="q")
    with pytest.raises(ValueError, match="no recurrent module"):
        R.hidden_gradients(nn.Linear(2, 2), x, loss_fn=lambda o: o.sum())
    two = nn.ModuleDict({"a": nn.RNN(2, 4), "b": nn.GRU(2, 4)})
    with pytest.raises(ValueError, match="pass module="):
        R.hidden_gradients(two, x, loss_fn=lambda o: o.sum())
    with pytest.raises(ValueError, match="one element"):
        R.hidden_gradients(rnn, x, loss_fn=lambda o: o)
    drop = nn.LSTM(2, 4, num_layers=2, dropout=0.5)
    with pytest.raises(ValueError, match="dropout"):
        R.hidden_gradients(drop, x, loss_fn=lambda o: o.sum())
    packed = nn.utils.rnn.pack_padded_sequence(x, [5, 3], enforce_sorted=False)
    with pytest.raises(TypeError, match="packed"):
        R.hidden_gradients(rnn, packed, loss_fn=lambda o: o.data.sum())
    with pytest.raises(ValueError, match="finite and > 0"):
        R.decay_rate(torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        R.decay_rate(torch.tensor([1.0]))


def test_module_forward_restored():
    rnn = nn.RNN(2, 4)
    x = torch.randn(5, 2, 2)
    R.hidden_gradients(rnn, x, loss_fn=lambda o: o.sum())
    assert "forward" not in vars(rnn)


@given(st.floats(0.2, 2.0), st.integers(0, 5))
def test_linear_rate_is_gain(gain, seed):
    net = networks.rnn(6, spectral_radius=gain, activation="identity", seed=seed).double()
    x = torch.randn(1, 15, 1, dtype=torch.float64)
    j = R.step_jacobians(net, x)
    assert j.shape == (15, 1, 6, 6)
    assert R.predicted_rate(j) == pytest.approx(gain, rel=1e-6)
    g = R.hidden_gradients(net, x, loss_fn=lambda h: h.sum())
    assert R.decay_rate(g) == pytest.approx(gain, rel=1e-6)


def test_step_jacobians_equal_autograd():
    torch.manual_seed(7)
    rnn = nn.RNN(2, 5, batch_first=True).double()
    x = torch.randn(1, 6, 2, dtype=torch.float64)
    j = R.step_jacobians(rnn, x)
    _, h3 = rnn(x[:, :3])
    step = lambda h: rnn(x[:, 3:4], h.reshape(1, 1, 5))[1].reshape(5)  # noqa: E731
    want = torch.autograd.functional.jacobian(step, h3.reshape(5))
    torch.testing.assert_close(j[3, 0], want)


def test_pascanu_bound_holds_every_step():
    torch.manual_seed(8)
    rnn = nn.RNN(2, 16, batch_first=True).double()
    x = torch.randn(4, 40, 2, dtype=torch.float64)
    j = R.step_jacobians(rnn, x)
    bound = R.pascanu_factor(rnn.weight_hh_l0, "tanh")
    assert float(torch.linalg.matrix_norm(j, ord=2).max()) <= bound + 1e-9
    assert R.predicted_rate(j, "norm") <= bound + 1e-9


def test_spectral_helpers():
    w = torch.tensor([[0.0, 2.0], [0.5, 0.0]])
    assert R.spectral_radius(w) == pytest.approx(1.0)
    assert R.max_singular_value(w) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="square"):
        R.spectral_radius(torch.ones(2, 3))
    with pytest.raises(ValueError, match="activation"):
        R.pascanu_factor(w, "swish")
    with pytest.raises(TypeError, match="single-layer"):
        R.step_jacobians(nn.LSTM(2, 3), torch.randn(1, 2, 2))
    lstm = nn.LSTM(2, 3, num_layers=2)
    assert [tuple(w.shape) for w in R.recurrent_matrices(lstm)] == [(12, 3), (12, 3)]


def test_irnn():
    rnn = R.irnn_(nn.RNN(2, 5, nonlinearity="relu"), seed=1)
    torch.testing.assert_close(rnn.weight_hh_l0, torch.eye(5))
    assert float((rnn.bias_ih_l0.abs().sum() + rnn.bias_hh_l0.abs().sum()).detach()) == 0
    assert 0 < float(rnn.weight_ih_l0.detach().std()) < 0.01
    again = R.irnn_(nn.RNN(2, 5, nonlinearity="relu"), seed=1)
    torch.testing.assert_close(rnn.weight_ih_l0, again.weight_ih_l0)
    with pytest.raises(TypeError, match="ReLU"):
        R.irnn_(nn.RNN(2, 5))
    with pytest.raises(ValueError, match="scale"):
        R.irnn_(nn.RNN(2, 5, nonlinearity="relu"), scale=-1)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_orthogonal(cls):
    m = R.orthogonal_(cls(2, 6, num_layers=2), gain=0.9, seed=3)
    for w in R.recurrent_matrices(m):
        for block in w.split(6, 0):
            s = torch.linalg.svdvals(block)
            torch.testing.assert_close(s, torch.full((6,), 0.9), atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="module"):
        R.orthogonal_(nn.Linear(2, 2))


def test_forget_bias():
    m = R.set_forget_bias_(nn.LSTM(2, 4, num_layers=2), 1.0)
    for k in range(2):
        b = getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")
        torch.testing.assert_close(b[4:8], torch.ones(4))
    # the cell path: at b_f = 3 and zero other weights the cell keeps sigmoid(3) per step
    with pytest.raises(TypeError, match="forget gate"):
        R.set_forget_bias_(nn.GRU(2, 4), 1.0)
    with pytest.raises(ValueError, match="bias=False"):
        R.set_forget_bias_(nn.LSTM(2, 4, bias=False), 1.0)
    with pytest.raises(TypeError):
        R.set_forget_bias_(nn.LSTM(2, 4), "one")


def test_cell_gradient_rate_is_forget_gate():
    """With W_hh = 0 and no input, dL/dc_{t-1} = f * dL/dc_t: the rate is sigmoid(b_f)."""
    m = nn.LSTM(1, 3, batch_first=True).double()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.bias_ih_l0[0:3] = 2.0   # input gate open
        m.bias_ih_l0[6:9] = 1.0   # g > 0 so the cell fills
    R.set_forget_bias_(m, 2.0)
    x = torch.zeros(2, 20, 1, dtype=torch.float64)
    g = R.hidden_gradients(m, x, loss_fn=lambda o: o[:, -1].sum(), state="c")
    assert R.decay_rate(g[:-1]) == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
