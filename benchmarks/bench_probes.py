"""How much do the gradient-flow probes cost, and do they leak?

    python benchmarks/bench_probes.py [--reps 40] [--depth 50] [--width 256] [--batch 256]

Times one forward + backward pass of a deep ReLU MLP (``lib.networks.mlp``, He
init) with ``lib.probes.watch`` active, including building ``rec.report()``,
against the same pass without probes. The two variants alternate, and swap
which goes first, so that drift in the machine's speed hits both alike; the
figure of merit is the ratio of the medians. The target is a ratio of at most
1.3: the script prints PASS or MISS and exits 0 either way, since timings
depend on the machine (and on whatever else runs on it).

It then runs many ``watch()`` blocks on the same model and checks that the
number of live tensors and Python objects does not grow, that no hook is left
on the model, and (less exactly: the allocator keeps freed memory) that the
resident memory stays flat.

Torch uses one thread unless OMP_NUM_THREADS says otherwise, as in the
Makefile: the book runs single-threaded, and a second thread on a loaded
two-core machine makes timings erratic.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import networks, probes  # noqa: E402

TARGET = 1.3


def _plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()


def _probed_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[probes.LayerStats]:
    model.zero_grad(set_to_none=True)
    with probes.watch(model) as rec:
        nn.functional.cross_entropy(model(x), y).backward()
    return rec.report()


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _setup(depth: int, width: int, batch: int, seed: int):
    model = networks.mlp(depth, width, "relu", init="he", seed=0)
    g = torch.Generator().manual_seed(seed)  # not the model's seed: data and weights independent
    x = torch.randn(batch, 64, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return model, x, y


def overhead(depth: int, width: int, batch: int, reps: int, warmup: int) -> tuple[list, list]:
    """Interleaved timings (seconds) of the plain and the probed step."""
    model, x, y = _setup(depth, width, batch, seed=100)
    for _ in range(warmup):
        _plain_step(model, x, y)
        _probed_step(model, x, y)
    plain, probed = [], []
    for i in range(reps):
        if i % 2:
            plain.append(_timed(_plain_step, model, x, y))
            probed.append(_timed(_probed_step, model, x, y))
        else:
            probed.append(_timed(_probed_step, model, x, y))
            plain.append(_timed(_plain_step, model, x, y))
    return plain, probed


def _rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return float("nan")
    return pages * resource.getpagesize() / 2**20


def _live_objects() -> tuple[int, int]:
    """(live tensors, live Python objects tracked by the garbage collector)."""
    gc.collect()
    objs = gc.get_objects()
    # type(), not isinstance: isinstance on some lazy torch module objects prints warnings.
    return sum(1 for o in objs if issubclass(type(o), torch.Tensor)), len(objs)


def leak_check(depth: int, width: int, batch: int, blocks: int) -> dict[str, float]:
    model, x, y = _setup(depth, width, batch, seed=101)
    for _ in range(10):  # let the allocator and autograd reach their steady state
        _probed_step(model, x, y)
    rss0, (tensors0, objects0) = _rss_mib(), _live_objects()
    for _ in range(blocks):
        _probed_step(model, x, y)
    rss1, (tensors1, objects1) = _rss_mib(), _live_objects()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                for m in model.modules())
    return {"rss_growth_mib": rss1 - rss0, "tensor_growth": tensors1 - tensors0,
            "object_growth": objects1 - objects0, "hooks_left": hooks}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=40, help="timed repetitions of each variant")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--leak-blocks", type=int, default=100, help="watch() blocks in the leak check")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    print(f"probe overhead: {args.depth}-layer width-{args.width} ReLU MLP (He init), "
          f"batch {args.batch}, {args.reps} interleaved repetitions, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    plain, probed = overhead(args.depth, args.width, args.batch, args.reps, args.warmup)
    p50, q50 = statistics.median(plain), statistics.median(probed)
    ratio = q50 / p50
    print(f"  forward+backward without probes:        {p50 * 1e3:8.2f} ms (median; "
          f"best {min(plain) * 1e3:.2f})")
    print(f"  forward+backward with watch()+report(): {q50 * 1e3:8.2f} ms (median; "
          f"best {min(probed) * 1e3:.2f})")
    print(f"  overhead per layer: {(q50 - p50) / (args.depth + 1) * 1e6:.0f} us")
    print(f"  ratio of medians: {ratio:.3f}  (target <= {TARGET})  "
          f"{'PASS' if ratio <= TARGET else 'MISS'}")

    leak = leak_check(args.depth, args.width, args.batch, args.leak_blocks)
    # A leaked 256x256 float32 tensor per block would add 25 MiB over 100 blocks; the allocator
    # alone moves RSS by a few MiB either way.
    ok = (leak["tensor_growth"] <= 0 and leak["object_growth"] <= 50 and leak["hooks_left"] == 0
          and leak["rss_growth_mib"] < 20)
    print(f"memory over {args.leak_blocks} watch() blocks: live tensors "
          f"{leak['tensor_growth']:+d}, Python objects {leak['object_growth']:+d}, "
          f"hooks left {leak['hooks_left']}, RSS {leak['rss_growth_mib']:+.1f} MiB  "
          f"{'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
