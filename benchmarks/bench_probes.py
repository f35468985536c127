"""How much do the gradient-flow probes cost, and do they leak?

    python benchmarks/bench_probes.py [--reps 20] [--steps 100]

1. Overhead of ``lib.probes.watch`` + ``rec.report()`` against a plain forward
   + backward pass, on three models: a ResNet-style CNN with in-place ReLU and
   BatchNorm (torchvision's BasicBlock, built in tests/test_probes_architectures.py),
   a tiny Hugging Face GPT-2 (random init, no download) and a deep ReLU MLP.
   Target: ratio of medians <= 1.3.
2. ``lib.probes.monitor(model, every=10)`` over a training loop with
   ``torch.optim.AdamW`` against the same loop unmonitored, on the CNN and GPT-2.
   Target: <= 1.1.
3. Many ``watch()`` blocks: live tensors and Python objects do not grow, no
   hook is left, resident memory stays flat.

Variants alternate and swap which goes first, so that drift in the machine's
speed hits both alike. Times are CPU seconds of this process
(``time.process_time``: other work on a shared machine does not count). The
script prints PASS or MISS and exits 0 either way.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lib import networks, probes  # noqa: E402

TARGET = 1.3
MONITOR_TARGET = 1.1


def _plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()


def _probed_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[probes.LayerStats]:
    model.zero_grad(set_to_none=True)
    with probes.watch(model) as rec:
        nn.functional.cross_entropy(model(x), y).backward()
    return rec.report()


def _timed(fn, *args) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def _models() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    from test_probes_architectures import HF, ResNet, gpt2

    g = torch.Generator().manual_seed(100)
    torch.manual_seed(0)
    cnn = (ResNet(width=16), torch.randn(32, 3, 32, 32, generator=g),
           torch.randint(0, 10, (32,), generator=g))
    tokens = torch.randint(0, 64, (16, 33), generator=g)
    gpt = (_Flat(HF(gpt2(n_layer=4, dim=64, vocab=64, positions=32))), tokens[:, :-1],
           tokens[:, 1:].reshape(-1))
    mlp = _setup(50, 256, 256, seed=100)
    return {"resnet-cnn": cnn, "gpt2-tiny": gpt, "mlp-50x256": mlp}


class _Flat(nn.Module):
    """Token logits (batch, tokens, vocab) flattened to (batch * tokens, vocab)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.m(x)
        return out.reshape(-1, out.shape[-1])


def overhead_of(model, x, y, reps: int, warmup: int) -> tuple[list, list]:
    for _ in range(warmup):
        _plain_step(model, x, y)
        _probed_step(model, x, y)
    plain, probed = [], []
    for i in range(reps):
        first, second = ((_plain_step, plain), (_probed_step, probed))[::1 if i % 2 else -1]
        for fn, out in (first, second):
            out.append(_timed(fn, model, x, y))
    return plain, probed


def monitor_overhead(model, x, y, steps: int) -> float:
    """CPU time of an AdamW loop with monitor(every=10) over the same loop without."""
    def loop(monitored: bool) -> float:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        mon = probes.monitor(model, every=10, samples=256) if monitored else None
        t0 = time.process_time()
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if mon is not None:
                mon.step(loss)
        t = time.process_time() - t0
        if mon is not None:
            mon.close()
        return t

    loop(False)
    runs = {True: [], False: []}
    for i in range(4):
        for flag in ((True, False) if i % 2 else (False, True)):
            runs[flag].append(loop(flag))
    return statistics.median(runs[True]) / statistics.median(runs[False])


def _setup(depth: int, width: int, batch: int, seed: int):
    model = networks.mlp(depth, width, "relu", init="he", seed=0)
    g = torch.Generator().manual_seed(seed)  # not the model's seed: data and weights independent
    x = torch.randn(batch, 64, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return model, x, y


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
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions of each variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100, help="training steps per monitored loop")
    ap.add_argument("--leak-blocks", type=int, default=100, help="watch() blocks in the leak check")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU time")
    models = _models()
    for name, (model, x, y) in models.items():
        plain, probed = overhead_of(model, x, y, args.reps, args.warmup)
        p50, q50 = statistics.median(plain), statistics.median(probed)
        ratio = q50 / p50
        print(f"  {name:<11} watch+report {q50 * 1e3:8.2f} ms vs plain {p50 * 1e3:8.2f} ms: "
              f"ratio {ratio:.3f} (target <= {TARGET}) {'PASS' if ratio <= TARGET else 'MISS'}")
    for name in ("resnet-cnn", "gpt2-tiny"):
        ratio = monitor_overhead(*models[name], steps=args.steps)
        print(f"  {name:<11} monitor(every=10), AdamW loop of {args.steps} steps: ratio "
              f"{ratio:.3f} (target <= {MONITOR_TARGET}) "
              f"{'PASS' if ratio <= MONITOR_TARGET else 'MISS'}")

    leak = leak_check(50, 256, 256, args.leak_blocks)
    ok = (leak["tensor_growth"] <= 0 and leak["object_growth"] <= 50 and leak["hooks_left"] == 0
          and leak["rss_growth_mib"] < 20)
    print(f"memory over {args.leak_blocks} watch() blocks: live tensors "
          f"{leak['tensor_growth']:+d}, Python objects {leak['object_growth']:+d}, "
          f"hooks left {leak['hooks_left']}, RSS {leak['rss_growth_mib']:+.1f} MiB  "
          f"{'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
