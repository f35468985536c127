"""Export every notebook listed in _toc.yml to .ipynb for nbval.

nbval collects .ipynb files only, and the book's sources are MyST-markdown
notebooks (jupytext). Pages without a jupytext header (plain prose) are skipped.

    python scripts/export_notebooks.py OUTDIR          # writes OUTDIR/<name>.ipynb
    python scripts/export_notebooks.py --list          # prints the notebook sources
    python scripts/export_notebooks.py --colab OUTDIR  # executed copies for Colab
    python scripts/export_notebooks.py --visible OUTDIR  # only the code a reader sees

``--colab`` takes the executed notebooks of the last ``make book``
(``_build/jupyter_execute``) and puts a set-up cell first that, on Colab
only, installs ``lib`` from the repository and myst-nb (for ``glue``). The
publishing workflow pushes them to the ``notebooks`` branch, where the
book's Colab buttons point.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files(root: Path = ROOT) -> list[Path]:
    """Every source file named in _toc.yml, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries: list) -> None:
        for e in entries or []:
            if "file" in e:
                names.append(e["file"])
            walk(e.get("sections", []))
            walk(e.get("chapters", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    out = []
    for n in names:
        matches = [p for p in (root / f"{n}.md", root / f"{n}.ipynb") if p.exists()]
        if not matches:
            raise SystemExit(f"_toc.yml names {n!r}, but neither {n}.md nor {n}.ipynb exists")
        out.append(matches[0])
    return out


def is_notebook(path: Path) -> bool:
    """A MyST source is a notebook if its front matter carries a jupytext kernelspec."""
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


def notebooks(root: Path = ROOT) -> list[Path]:
    return [p for p in toc_files(root) if is_notebook(p)]


COLAB_SETUP = """\
# Set-up for Google Colab (does nothing elsewhere): install the book's `lib`
# package and myst-nb, which provides `glue`. Colab's own torch is used.
import sys
if "google.colab" in sys.modules:
    %pip install -q myst-nb==1.4.0 "gradient-flow-lib @ git+{url}@{branch}"
"""


def export_colab(out: Path, root: Path = ROOT) -> int:
    config = yaml.safe_load((root / "_config.yml").read_text())
    repo = config["repository"]
    setup = COLAB_SETUP.format(url=repo["url"], branch=repo.get("branch", "main"))
    executed = root / "_build" / "jupyter_execute"
    (out / "book").mkdir(parents=True, exist_ok=True)
    nbs = notebooks(root)
    for p in nbs:
        src = executed / p.relative_to(root).with_suffix(".ipynb")
        if not src.exists():
            raise SystemExit(f"{src} is missing: run `make book` first")
        nb = nbformat.read(src, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
        nbformat.write(nb, out / p.relative_to(root).with_suffix(".ipynb"))
    print(f"exported {len(nbs)} executed notebooks for Colab to {out / 'book'}")
    return 0


#: Cells whose code the page does not show (hide-input shows it only on a click).
HIDDEN_TAGS = {"remove-cell", "remove-input", "hide-input", "hide-cell"}


def export_visible(out: Path, root: Path = ROOT) -> int:
    """Each notebook with only the code cells a reader sees, for the line-length check."""
    out.mkdir(parents=True, exist_ok=True)
    nbs = notebooks(root)
    for p in nbs:
        nb = jupytext.read(p)
        nb.cells = [c for c in nb.cells if c.cell_type == "code"
                    and not HIDDEN_TAGS & set(c.get("metadata", {}).get("tags", []))]
        jupytext.write(nb, out / f"{p.stem}.ipynb")
    print(f"exported the visible code of {len(nbs)} notebooks to {out}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        for p in notebooks():
            print(p.relative_to(ROOT))
        return 0
    if argv[:1] == ["--colab"] and len(argv) == 2:
        return export_colab(Path(argv[1]))
    if argv[:1] == ["--visible"] and len(argv) == 2:
        return export_visible(Path(argv[1]))
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    nbs = notebooks()
    for p in nbs:
        jupytext.write(jupytext.read(p), out / f"{p.stem}.ipynb")
    print(f"exported {len(nbs)} notebooks to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
