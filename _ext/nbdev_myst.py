"""Read nbdev notebooks for myst-nb: strip nbdev's `#|` directives and turn them
into myst-nb tags.

myst-nb knows nothing of nbdev: left alone, `#| hide` cells are shown, `#| eval:
false` cells run, and every directive line appears on the page. Jupyter Book is
pointed at `read_nbdev_notebook` through `nb_custom_formats`, so every chapter
passes through here first.
"""

from __future__ import annotations

import re

import nbformat

__all__ = [
    "parse_directives",
    "directive_tags",
    "strip_directives",
    "read_nbdev_notebook",
    "setup",
]

# `#| name`, `#| name args` (nbdev style) or `#| name: value` (Quarto style)
_DIRECTIVE = re.compile(r"^\s*#\|\s*(?P<name>[\w-]+)\s*:?\s*(?P<value>.*?)\s*$")
_FALSE = {"false", "no", "0", "off"}


def parse_directives(source: str) -> tuple[dict[str, str], str]:
    """Split a code cell into its leading `#|` directives (name -> value) and
    the code after them."""
    lines = source.splitlines(keepends=True)
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _DIRECTIVE.match(line)
        if m:
            directives[m["name"].lower()] = (m["value"] or "").strip()
        # first line of real code (blank lines between directives are skipped)
        elif line.strip():
            break
        i += 1
    return directives, "".join(lines[i:])


def _is_false(value: str) -> bool:
    return value.strip().lower() in _FALSE


def directive_tags(directives: dict[str, str]) -> list[str]:
    """The myst-nb cell tags that reproduce what nbdev's directives mean on a
    documentation page."""
    tags = []
    if "hide" in directives or "default_exp" in directives:
        tags.append("remove-cell")
    if "include" in directives and _is_false(directives["include"]):
        tags.append("remove-cell")
    if "eval" in directives and _is_false(directives["eval"]):
        tags.append("skip-execution")
    if "hide_input" in directives or (
        "echo" in directives and _is_false(directives["echo"])
    ):
        tags.append("remove-input")
    if "hide_output" in directives or (
        "output" in directives and _is_false(directives["output"])
    ):
        tags.append("remove-output")
    return list(dict.fromkeys(tags))


def strip_directives(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove `#|` lines from every code cell of `nb` (in place) and tag each
    cell as they asked."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        directives, code = parse_directives(cell.source)
        if not directives:
            continue
        cell.source = code
        tags = cell.metadata.setdefault("tags", [])
        tags.extend(t for t in directive_tags(directives) if t not in tags)
    return nb


def read_nbdev_notebook(text: str) -> nbformat.NotebookNode:
    """Read an `.ipynb` string as myst-nb does, then strip and translate its
    nbdev directives."""
    return strip_directives(nbformat.reads(text, as_version=4))


def setup(app):
    """Sphinx entry point: nothing to register; the reader is named in
    `nb_custom_formats`."""
    return {"parallel_read_safe": True, "parallel_write_safe": True}
