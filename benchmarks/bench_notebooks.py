"""Time a clean book build, every notebook of the book, and the floor they all pay.

    python benchmarks/bench_notebooks.py [--book]     (make bench passes --book)

``--book`` first times a clean build exactly as ``make book`` runs it
(``scripts/build_book.py``: notebooks executed on ``$JOBS`` cores, ``-W``,
each in a kernel forked from one that has imported torch and the rest), and
records how long each page took to read (execute) in it. Then, for each
notebook in _toc.yml, alone in a fresh ordinary kernel, as a reader running
it pays: wall time and CPU time (user + sys of the kernel process, which
does not grow when other processes compete for the cores, while wall time
does). The floor is a notebook that only starts a kernel and imports torch,
matplotlib, myst-nb and lib: no chapter can be faster. It is measured before
and after the notebooks; when the two disagree by more than 25 % the
machine's speed changed during the run and the ratio is flagged unreliable.

Budgets (2-core CPU): clean book build <= 60 s wall; no notebook over 15 s
wall (in the build, and alone); total notebook execution alone within 2x the
floor summed over notebooks.
Prints PASS/MISS per budget and exits 0 either way: a measurement, not a test.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
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
import numpy as np
import torch
from myst_nb import glue

from lib import activations, data, init, networks, notebook, plots, probes, training

SEED = notebook.setup()
```
"""
BOOK_LIMIT_S = 60.0
LIMIT_S = 15.0
FLOOR_FACTOR = 2.0


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_run(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of executing ``path`` in a fresh kernel (the kernel is our child)."""
    cpu0 = _children_cpu()
    wall = run(path)
    return wall, _children_cpu() - cpu0


def build_page_seconds(nb: Path) -> float | None:
    """How long ``nb`` took to read (execute) in the last build (build_book's record)."""
    import build_book

    docname = nb.relative_to(ROOT).with_suffix("").as_posix()
    return build_book.recorded_seconds(docname)


def clean_book_build() -> tuple[float, int]:
    for d in ("html", "jupyter_execute", ".doctrees", ".jupyter_cache"):
        shutil.rmtree(ROOT / "_build" / d, ignore_errors=True)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"),
                           "--jobs", os.environ.get("JOBS", "2"), "-W", "--keep-going", str(ROOT)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
    return wall, proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--book", action="store_true", help="also time a clean book build first")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.book:
        wall, code = clean_book_build()
        if code:
            print("the build failed; its time is up to the failure")
        ok = code == 0 and wall <= BOOK_LIMIT_S
        print(f"clean book build (make book): {wall:.1f} s wall"
              f"{'' if code == 0 else f', FAILED (exit {code})'} -> "
              f"{'PASS' if ok else 'MISS'} (limit {BOOK_LIMIT_S:.0f} s)\n")
    tmp = tempfile.TemporaryDirectory()
    floor_nb = Path(tmp.name) / "floor.md"
    floor_nb.write_text(FLOOR_SOURCE)
    jupytext.read(floor_nb)  # fail early if the floor notebook does not parse
    floor_before = min(timed_run(floor_nb) for _ in range(2))
    in_build = {nb: build_page_seconds(nb) for nb in notebooks()} if args.book else {}
    if in_build:
        page = {nb: t for nb, t in in_build.items() if t is not None}
        slowest_page = max(page, key=page.get)
        print(f"slowest notebook in the build: {slowest_page.name} {page[slowest_page]:.1f} s -> "
              f"{'PASS' if page[slowest_page] <= LIMIT_S else 'MISS'} (limit {LIMIT_S:.0f} s)\n")
    print("each notebook alone, in an ordinary kernel (the build column: its page in the build)")
    print(f"{'notebook':<40}{'build s':>8}{'wall s':>8}{'CPU s':>8}{'CPU/floor':>11}"
          "   (CPU/floor: against the floor measured first)")
    times, failed = {}, []
    for nb in notebooks():
        try:
            times[nb] = timed_run(nb)
        except Exception as exc:  # noqa: BLE001 - a failing notebook is reported, the rest timed
            failed.append(nb)
            print(f"{nb.relative_to(ROOT).as_posix():<40}  FAILED ({type(exc).__name__}; "
                  f"scripts/run_notebook.py shows the cell)")
            continue
        wall, cpu = times[nb]
        flag = "" if wall <= LIMIT_S else f"  MISS (> {LIMIT_S:.0f} s)"
        built = in_build.get(nb)
        built_s = f"{built:8.1f}" if built is not None else f"{'-':>8}"
        print(f"{nb.relative_to(ROOT).as_posix():<40}{built_s}{wall:8.1f}{cpu:8.1f}"
              f"{cpu / floor_before[1]:11.1f}{flag}")
    # The floor again after the notebooks: a machine whose speed drifts during
    # the run (this one's did by up to 60 % within the hour) makes the ratio
    # meaningless unless both ends agree.
    floor_after = min(timed_run(floor_nb) for _ in range(2))
    tmp.cleanup()
    floor_wall = (floor_before[0] + floor_after[0]) / 2
    floor_cpu = (floor_before[1] + floor_after[1]) / 2
    drift = max(floor_before[1], floor_after[1]) / min(floor_before[1], floor_after[1]) - 1
    if not times:
        return 1
    if failed:
        print(f"{len(failed)} notebook(s) failed and are left out of the totals")
    n = len(times)
    total_wall = sum(w for w, _ in times.values())
    total_cpu = sum(c for _, c in times.values())
    print(f"{'total':<40}{'':>8}{total_wall:8.1f}{total_cpu:8.1f}")
    print(f"{'floor (kernel + imports), per notebook':<40}{'':>8}{floor_wall:8.1f}{floor_cpu:8.1f}"
          f"   (before {floor_before[1]:.1f}, after {floor_after[1]:.1f} s CPU)")
    print(f"{'floor x notebooks':<40}{'':>8}{floor_wall * n:8.1f}{floor_cpu * n:8.1f}")
    slowest = max(times, key=lambda p: times[p][0])
    print(f"slowest alone: {slowest.name} {times[slowest][0]:.1f} s wall, {times[slowest][1]:.1f} s CPU -> "
          f"{'PASS' if times[slowest][0] <= LIMIT_S else 'MISS'} (limit {LIMIT_S:.0f} s)")
    ratio = total_cpu / (floor_cpu * n)
    print(f"total execution {total_cpu:.1f} s CPU = {ratio:.2f} x the floor ({floor_cpu * n:.1f} s) -> "
          f"{'PASS' if ratio <= FLOOR_FACTOR else 'MISS'} (target <= {FLOOR_FACTOR:.0f}x)")
    if drift > 0.25:
        print(f"the floor moved by {drift:.0%} between the start and the end of the run: the "
              f"machine's speed changed, so the ratio above is unreliable; run again")
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"(benchmark wall time {time.perf_counter() - t0:.0f} s)")
    raise SystemExit(code)
