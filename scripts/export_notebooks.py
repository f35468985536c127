"""Export every notebook listed in _toc.yml to .ipynb for nbval.

nbval collects .ipynb files only, and the book's sources are MyST-markdown
notebooks (jupytext). Pages without a jupytext header (plain prose) are skipped.

    python scripts/export_notebooks.py OUTDIR      # writes OUTDIR/<name>.ipynb
    python scripts/export_notebooks.py --list      # prints the notebook sources
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
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


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        for p in notebooks():
            print(p.relative_to(ROOT))
        return 0
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
