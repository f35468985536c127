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
        assert mpl.rcParams[key] == (list(value) if isinstance(value, tuple) else value), key
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
