"""Execute one or more book chapters the way the build does, and time them.

    python scripts/run_notebook.py book/03_relu.md [book/04_dying_relu.md ...]

Runs each MyST-markdown notebook top to bottom in a fresh kernel with
``book/`` as working directory, prints its wall time, and exits non-zero on
the first cell that raises (tagged ``raises-exception`` cells excepted).
Use ``--save OUT.ipynb`` with a single notebook to keep the executed outputs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: Path, save: Path | None = None, timeout: int = 120) -> float:
    nb = jupytext.read(path)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the Makefile: see there why
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        if save is not None:
            nbformat.write(nb, save)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--save", type=Path, default=None)
    args = ap.parse_args()
    if args.save and len(args.notebooks) != 1:
        ap.error("--save takes exactly one notebook")
    total = 0.0
    for p in args.notebooks:
        try:
            dt = run(p, args.save)
        except CellExecutionError as exc:
            print(f"FAILED {p}\n{exc}", file=sys.stderr)
            return 1
        total += dt
        print(f"{dt:6.1f} s  {p}")
    if len(args.notebooks) > 1:
        print(f"{total:6.1f} s  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
