"""Build the book exactly as ``jupyter-book build -W --keep-going .``, on several cores.

    python scripts/build_book.py [--jobs 2] [jupyter-book build options...]

Jupyter Book 1's command line has no ``-j``, although its ``build_sphinx``
takes ``jobs`` and passes it to Sphinx. Sphinx then reads (and myst-nb
executes) the notebooks in that many forked processes: two notebooks run at
once on a two-core machine, with ``-W`` and ``raise_on_error`` as before, and
the executed pages are merged back, glue values included. This script calls
Jupyter Book's own ``build`` command with ``jobs`` set, plus two adjustments:

* ``sphinx_jupyterbook_latex`` and ``sphinx_multitoc_numbering`` (loaded by
  Jupyter Book) do not declare whether they are parallel-safe, so Sphinx
  would warn and fall back to one process. Both are safe for HTML: the first
  only acts on the LaTeX builder, the second renumbers sections in the main
  process after all pages are read. They are declared safe here.
* pybtex's ``find_plugin`` looks its plugin up among the installed
  packages' entry points on every call, and sphinxcontrib-bibtex calls it
  once per citation while resolving references, serially in the main
  process: 31 ms a call, 4 s for the book's 125 citations (profiled). The
  answer depends only on the arguments and the installed packages, so it is
  memoised for the build.
* Sphinx writes the HTML in ``jobs - 1`` processes, because the main
  process resolves each page's references before handing it over, and it
  first writes one page (the alphabetically first, a chapter) alone, to
  warm its template caches. With two jobs that left one writer, which the
  main process kept waiting: here the pages are written in ``jobs``
  processes, after the lightest page warms the caches.
* Sphinx splits the pages into ``jobs`` fixed chunks in alphabetical order,
  so one process would get chapters 1-8 and the other the light pages. Here
  each page is its own chunk and the slowest start first (longest job
  first), so the cores stay busy until the end. A page's expected time is
  how long it took to read (execute) in the last build on this machine,
  kept in ``.cache/page-seconds/`` (a scheduling hint only: every page is
  still executed afresh); a page with no record is estimated from its
  source size. Source size alone is a poor guide: chapters 7 and 9 are
  half the size of chapter 2 and run longer, so by size they started
  late and one core finished about 4 s after the other.

* Each notebook's kernel is forked from one process that has imported
  torch, numpy, matplotlib, ipykernel and what the notebooks import
  (``scripts/fork_kernels.py``), instead of importing them itself: about
  2.5 s of CPU saved per notebook.
  ``GF_FORK_KERNELS=0`` (or a system other than Linux) starts ordinary
  kernels; so does every kernel whose environment differs from the build's.

Every build executes every notebook afresh (``execute_notebooks: force`` in
``_config.yml``; the Makefile also clears ``_build`` first).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
UNDECLARED = ("sphinx_jupyterbook_latex", "sphinx_multitoc_numbering")


def _declare_parallel_safe(module_name: str) -> None:
    mod = importlib.import_module(module_name)
    original = mod.setup

    def setup(app: Any) -> dict:
        meta = original(app) or {}
        return {**meta, "parallel_read_safe": True, "parallel_write_safe": True}

    mod.setup = setup


#: What one ``automodule`` directive weighs in :func:`_cost`, in bytes of
#: notebook source: the API page (18 of them, 3 kB of source) reads in about
#: 5 s, as long as a 40 kB chapter executes, so by size alone it would start
#: last and keep one core busy after the other has finished.
AUTOMODULE_COST = 2500
#: Bytes of page source read (executed) per second, for a page with no record:
#: the chapters range from 3 to 8 kB/s on a two-core CPU (measured).
SOURCE_BYTES_PER_SECOND = 6000
#: Where each page's reading time in the last build is recorded, one file per page.
TIMES_DIR = ".cache/page-seconds"


def _times_file(docname: str) -> Path:
    return ROOT / TIMES_DIR / (docname.replace("/", "__") + ".txt")


def recorded_seconds(docname: str) -> float | None:
    try:
        seconds = float(_times_file(docname).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return seconds if 0 <= seconds < 3600 else None


def _cost(docname: str) -> float:
    """Expected reading time of a page in seconds (bigger = slower).

    The page's time in the last build when recorded, else an estimate from
    its source size (and its ``automodule`` directives); 0 for a missing page.
    """
    recorded = recorded_seconds(docname)
    if recorded is not None:
        return recorded
    for suffix in (".md", ".ipynb", ".rst"):
        path = ROOT / f"{docname}{suffix}"
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            size = len(text.encode()) + AUTOMODULE_COST * text.count("automodule::")
            return size / SOURCE_BYTES_PER_SECOND
    return 0.0


def _write_on_every_core() -> None:
    """Sphinx's parallel writing with ``jobs`` writers, the lightest page written first."""
    from sphinx.builders import Builder

    write_parallel = Builder._write_parallel
    if getattr(write_parallel, "_on_every_core", False):
        return

    @functools.wraps(write_parallel)
    def on_every_core(self: Any, docnames: Sequence[str], nproc: int) -> None:
        # the first page is resolved and written in the main process alone
        ordered = sorted(docnames, key=_cost)
        write_parallel(self, ordered, max(nproc, self.app.parallel))

    on_every_core._on_every_core = True  # type: ignore[attr-defined]
    Builder._write_parallel = on_every_core  # type: ignore[method-assign]


def _record_read_times() -> None:
    """Wrap Sphinx's ``Builder.read_doc`` to record each page's reading time.

    It runs in the worker process that reads the page; each page has its own
    file, written whole then renamed, so two workers never write one file.
    """
    import time

    from sphinx.builders import Builder

    read_doc = Builder.read_doc
    if getattr(read_doc, "_records_times", False):
        return

    @functools.wraps(read_doc)
    def timed(self: Any, docname: str, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        read_doc(self, docname, *args, **kwargs)
        path = _times_file(docname)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(f"{time.perf_counter() - start:.3f}\n", encoding="utf-8")
            tmp.replace(path)
        except OSError:  # a read-only checkout: schedule by size next time
            pass

    timed._records_times = True  # type: ignore[attr-defined]
    Builder.read_doc = timed  # type: ignore[method-assign]


def _memoise_pybtex_plugins() -> None:
    import pybtex.plugin

    find = pybtex.plugin.find_plugin
    if not hasattr(find, "cache_info"):
        pybtex.plugin.find_plugin = functools.lru_cache(maxsize=None)(find)


def balanced_chunks(docnames: Sequence[str], nproc: int, maxbatch: int = 10) -> list[list[str]]:
    """One page per chunk, slowest (:func:`_cost`) first.

    Sphinx starts the first ``nproc`` chunks at once and then takes waiting
    chunks last-in first-out (``ParallelTasks`` pops its waiting dict), so the
    rest is listed lightest first to be started heaviest first.
    """
    order = sorted(docnames, key=_cost, reverse=True)
    head, rest = order[:nproc], order[nproc:]
    return [[d] for d in head + rest[::-1]]


def _build_and_report(build_sphinx: Any, *args: Any, **kwargs: Any) -> Any:
    """Jupyter Book's ``build_sphinx``; on a failure in a worker, print the worker's traceback.

    A page read in a worker process that fails (a cell raising, with
    ``raise_on_error``) comes back as a ``SphinxParallelError`` whose message is
    only the page's path; the failing cell and its traceback are in the
    worker's traceback, printed here.
    """
    from sphinx.errors import SphinxParallelError

    result = build_sphinx(*args, **kwargs)
    err = result
    while isinstance(err, BaseException):
        if isinstance(err, SphinxParallelError):
            print(f"\n--- traceback of the failed page (worker process) ---\n{err.traceback}",
                  file=sys.stderr)
            break
        err = err.__cause__ or err.__context__
    return result


_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
_TOP_IMPORT = re.compile(r"^(?:from\s+([A-Za-z_][\w.]*)\s+import\s+(?:\(([^)]*)\)|([^\n#]*))"
                         r"|import\s+([^\n#;]*))", re.M)


def book_imports(book: Path) -> list[str]:
    """What the notebooks under ``book`` import at the top level of a code cell.

    ``import a.b`` gives ``a.b``; ``from a import b, c`` gives ``a:b`` and
    ``a:c`` (``b`` may be a submodule or a name). Imports inside functions or
    in the prose are not listed.
    """
    found: dict[str, None] = {}
    for path in sorted(book.glob("**/*.md")):
        for cell in _CODE_CELL.findall(path.read_text(encoding="utf-8", errors="replace")):
            for package, grouped, names, modules in _TOP_IMPORT.findall(cell):
                if package:
                    for name in (grouped or names).split(","):
                        words = name.split()  # "b" or "b as c"
                        member = words[0] if words else ""
                        found[f"{package}:{member}" if member.isidentifier() else package] = None
                else:  # import a.b as c, d
                    found.update((m.split()[0], None) for m in modules.split(",") if m.split())
    return list(found)


def _fork_kernels() -> None:
    """Serve this build's kernels from a preloaded process (:mod:`fork_kernels`).

    A ``python3`` kernel spec placed first on ``JUPYTER_PATH`` makes Jupyter
    start ``fork_kernels.py launch``, which asks the server for a forked
    kernel (or starts an ordinary one). The server exits when this process
    does: it reads its standard input, a pipe only this process (and the
    Sphinx workers forked from it) holds open.
    """
    import json
    import subprocess
    import tempfile

    # Linux only: the server counts its threads in /proc before it forks, and
    # macOS does not allow forking a process that has used some system libraries.
    if os.environ.get("GF_FORK_KERNELS", "1") == "0" or not sys.platform.startswith("linux"):
        return
    where = Path(tempfile.mkdtemp(prefix="gf-kernels-"))
    sock = where / "server.sock"
    script = str(ROOT / "scripts" / "fork_kernels.py")
    spec = where / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, script, "launch", str(sock), "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel, forked)",
        "language": "python",
        "metadata": {"debugger": True},
    }), encoding="utf-8")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(where), os.environ.get("JUPYTER_PATH")) if p)
    preload = ",".join(book_imports(ROOT / "book"))
    subprocess.Popen([sys.executable, script, "serve", str(sock), str(where), preload],
                     stdin=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", "-j", type=int, default=int(os.environ.get("JOBS", "2")),
                    help="processes reading (executing) pages at once (default: $JOBS or 2)")
    args, rest = ap.parse_known_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")

    for name in UNDECLARED:
        _declare_parallel_safe(name)
    _memoise_pybtex_plugins()
    _record_read_times()
    _write_on_every_core()
    _fork_kernels()
    import sphinx.builders

    sphinx.builders.make_chunks = balanced_chunks  # type: ignore[assignment]
    from jupyter_book import sphinx as jb_sphinx
    from jupyter_book.cli import main as jb_main

    # The build command imports build_sphinx from jupyter_book.sphinx when it runs.
    jb_sphinx.build_sphinx = functools.partial(_build_and_report, jb_sphinx.build_sphinx,
                                               jobs=args.jobs)
    build_args = ["build", *(rest or ["-W", "--keep-going", str(ROOT)])]
    try:
        jb_main.main(build_args, standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    code = main()
    # Every file is written and every worker and kernel has exited by now;
    # tearing the interpreter down (freeing Sphinx's environment, every
    # doctree and module) would take another second, for nothing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
