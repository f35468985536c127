"""Benchmark: 10 seeds trained as one population against 10 sequential runs.

Run ``.venv/bin/python benchmarks/bench_population.py``. It trains the
chapter-sized digits MLPs (chapter 3's ten hidden layers of 32 units,
chapter 4's six; ten layers of 64; a 6-block residual LayerNorm MLP of 64)
for 150 SGD steps with batches of 64, once
as ten ``lib.training.train`` calls and once as one
``lib.population.train`` call, on one thread, and prints each CPU time and
the ratio (target: >= 4x). Timing is CPU time of this process
(``time.process_time``), so other load on the machine matters less.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lib import data, networks, population, seeds, training  # noqa: E402

CASES = {
    "ch3: relu 10x32 (he)": lambda s: networks.mlp(10, 32, "relu", init="he", seed=s),
    "ch4: relu 6x32 (he)": lambda s: networks.mlp(6, 32, "relu", init="he", seed=s),
    "relu 10x64 (he)": lambda s: networks.mlp(10, 64, "relu", init="he", seed=s),
    "residual layernorm 6x64": lambda s: networks.mlp(6, 64, "relu", init="he", norm="layer",
                                                      residual=True, seed=s),
}


def main(n: int = 10, steps: int = 150) -> float:
    torch.set_num_threads(1)
    digits = data.digits()
    member = seeds.member_seeds(n, "bench-population")
    kw = dict(steps=steps, lr=0.05, batch_size=64, eval_every=steps // 5)
    ratios = {}
    for name, build in CASES.items():
        t0 = time.process_time()
        for s in member:
            training.train(build(s), digits, seed=s, progress=False, **kw)
        sequential = time.process_time() - t0
        t0 = time.process_time()
        population.train(build, digits, member, lrs=kw["lr"], progress=False,
                         **{k: v for k, v in kw.items() if k != "lr"})
        batched = time.process_time() - t0
        ratio = ratios[name] = sequential / batched
        print(f"{name:26s} {n} seeds x {steps} steps: sequential {sequential:5.2f} s, "
              f"population {batched:5.2f} s CPU, ratio {ratio:4.1f}x")
    worst = min(ratios.values())
    print(f"population speed-up: worst {worst:.1f}x, best {max(ratios.values()):.1f}x "
          "(target >= 4x). Width-64 stacks are bound by the batched matrix products "
          "themselves, not by per-step overhead, so they gain less.")
    return worst


if __name__ == "__main__":
    main()
