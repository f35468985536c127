"""Time every notebook of the book, and the floor they all pay.

    python benchmarks/bench_notebooks.py          (or: make bench)

For each notebook in _toc.yml: wall time to execute it top to bottom in a fresh
kernel, as the book build does. The floor is the time of a notebook that only
starts a kernel and imports torch, matplotlib and lib: no chapter can be
faster. Targets for the finished book (2-core CPU): no notebook over 20 s,
total within 3x the floor summed over notebooks. Prints PASS/MISS per target
and exits 0 either way: this is a measurement, not a test.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from export_notebooks import notebooks  # noqa: E402
from run_notebook import run  # noqa: E402

FLOOR_SOURCE = """\
---
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

```{code-cell} ipython3
import matplotlib.pyplot as plt
import torch
from myst_nb import glue

from lib import activations, data, init, networks, plots, probes, training
```
"""
LIMIT_S = 20.0
FLOOR_FACTOR = 3.0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        floor_nb = Path(tmp) / "floor.md"
        floor_nb.write_text(FLOOR_SOURCE)
        jupytext.read(floor_nb)  # fail early if the floor notebook does not parse
        floor = min(run(floor_nb) for _ in range(2))
    print(f"{'notebook':<40}{'seconds':>9}")
    times = {}
    for nb in notebooks():
        times[nb] = run(nb)
        flag = "" if times[nb] <= LIMIT_S else f"  MISS (> {LIMIT_S:.0f} s)"
        print(f"{nb.relative_to(ROOT).as_posix():<40}{times[nb]:9.1f}{flag}")
    total = sum(times.values())
    budget = FLOOR_FACTOR * floor * len(times)
    print(f"{'total':<40}{total:9.1f}")
    print(f"{'floor (kernel + imports), per notebook':<40}{floor:9.1f}")
    print(f"{'floor x notebooks':<40}{floor * len(times):9.1f}")
    slowest = max(times, key=times.get)
    print(f"slowest: {slowest.name} {times[slowest]:.1f} s -> "
          f"{'PASS' if times[slowest] <= LIMIT_S else 'MISS'} (limit {LIMIT_S:.0f} s)")
    print(f"total {total:.1f} s vs {FLOOR_FACTOR:.0f} x floor x notebooks = {budget:.1f} s -> "
          f"{'PASS' if total <= budget else 'MISS'}")
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"(benchmark wall time {time.perf_counter() - t0:.0f} s)")
    raise SystemExit(code)
