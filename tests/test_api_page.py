"""The API reference page documents every public name of every lib module.

book/api.md lists members explicitly (autodoc would otherwise also document
re-exported imports); this keeps the list in step with each module's __all__.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = (Path(__file__).resolve().parent.parent / "book" / "api.md").read_text()
MODULES = ["seeds", "activations", "data", "init", "networks", "probes", "training", "diagnose", "plots"]
# Constants documented through the functions that use them, not as entries of their own.
CONSTANTS = {"SELU_ALPHA", "SELU_SCALE", "OPTIMIZERS", "NORMS", "SATURATION", "COLORS", "KINDS",
             "CHAPTERS"}


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_is_on_the_api_page(name):
    module = importlib.import_module(f"lib.{name}")
    block = re.search(rf"automodule:: lib\.{name}\n\s+:members: ([^\n]+)", API)
    assert block, f"book/api.md has no automodule block for lib.{name}"
    listed = {m.strip() for m in block.group(1).split(",")}
    missing = set(module.__all__) - CONSTANTS - listed
    assert not missing, f"lib.{name} exports {sorted(missing)} but book/api.md does not list them"
