"""The notebook reader that hides nbdev's `#|` directives from the website."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
from nbdev_myst import directive_tags, parse_directives, read_nbdev_notebook  # noqa: E402


def _nb(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return json.dumps(nb)


@pytest.mark.parametrize(
    "source, tags",
    [
        ("#| hide\nx = 1", ["remove-cell"]),
        ("#| default_exp corpus", ["remove-cell"]),
        ("#|default_exp corpus\n", ["remove-cell"]),
        ("#| export\n#| slow\ntrain()", []),
        ("#| eval: false\ntrain()", ["skip-execution"]),
        ("#| echo: false\nplot()", ["remove-input"]),
        ("#| output: false\nnoisy()", ["remove-output"]),
        ("#| export\ndef f(): pass", []),
        ("#|export\n#|eval:false\nf()", ["skip-execution"]),
        ("#| include: false\nx", ["remove-cell"]),
        ("#| eval: true\nx", []),
    ],
)
def test_directives_become_tags(source, tags):
    nb = read_nbdev_notebook(_nb(source))
    cell = nb.cells[0]
    assert cell.metadata.get("tags", []) == tags
    assert "#|" not in cell.source


def test_code_after_directives_is_kept_verbatim():
    directives, code = parse_directives("#| export\n\n#| slow\ndef f():\n    #| not a directive here\n    return 1\n")
    assert directives == {"export": "", "slow": ""}
    assert parse_directives("#| default_exp corpus")[0] == {"default_exp": "corpus"}
    assert parse_directives("#| eval:false\nx")[0] == {"eval": "false"}
    assert code == "def f():\n    #| not a directive here\n    return 1\n"


def test_plain_cells_and_markdown_untouched():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("#| not code"), nbformat.v4.new_code_cell("# a comment\nx = 1")]
    out = read_nbdev_notebook(json.dumps(nb))
    assert out.cells[0].source == "#| not code"
    assert out.cells[1].source == "# a comment\nx = 1"
    assert "tags" not in out.cells[1].metadata


def test_existing_tags_are_kept_once():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("#| hide\nx")
    cell.metadata["tags"] = ["remove-cell", "mine"]
    nb.cells = [cell]
    assert read_nbdev_notebook(json.dumps(nb)).cells[0].metadata["tags"] == ["remove-cell", "mine"]


def test_directive_tags_combine():
    assert directive_tags({"hide": "", "eval": "false", "output": "false"}) == [
        "remove-cell", "skip-execution", "remove-output"]


# ---- exercises, citations and math through the reader, in a real build with the book's settings ----

_EXERCISE = """## Exercises

```{exercise}
:label: ex-demo-scale

Remove the $\\sqrt{d_k}$ scaling and measure the attention entropy.
```

```{solution} ex-demo-scale
:class: dropdown

It falls: the softmax **saturates**.
```"""


def test_markdown_cells_with_exercises_pass_through_untouched():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(_EXERCISE), nbformat.v4.new_code_cell("#| hide\nx = 1")]
    out = read_nbdev_notebook(json.dumps(nb))
    assert out.cells[0].source == _EXERCISE
    assert "tags" not in out.cells[0].metadata
    assert out.cells[1].metadata["tags"] == ["remove-cell"]


def test_book_settings_render_exercises_citations_and_math(tmp_path):
    """Build a two-page book with the repository's own _config.yml, _ext/ and references.bib, with
    warnings as errors: a notebook read through our reader shows its exercise with the solution
    folded away, its citation linked to the bibliography, its math for MathJax served by the site,
    and no hidden cell."""
    root = Path(__file__).resolve().parents[1]
    for name in ("_config.yml", "references.bib"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "_ext", tmp_path / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nchapters:\n  - file: book/demo\n  - file: book/refs\n")
    book = tmp_path / "book"
    book.mkdir()
    (book / "index.md").write_text("# Demo\n\nAs in {cite:t}`vaswani2017attention`.\n\n```{nb-exec-table}\n```\n")
    (book / "refs.md").write_text("# References\n\n```{bibliography}\n```\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Demo chapter\n\nScaled by $\\sqrt{d_k}$ {cite:p}`devlin2019bert`."),
        nbformat.v4.new_code_cell("#| hide\nhidden_value = 41"),
        nbformat.v4.new_code_cell("#| export\nprint('answer', hidden_value + 1)"),
        nbformat.v4.new_markdown_cell(_EXERCISE),
    ]
    nbformat.write(nb, book / "demo.ipynb")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
         "build", str(tmp_path), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    site = tmp_path / "_build" / "html"
    page = (site / "book" / "demo.html").read_text(encoding="utf-8")
    assert "answer 42" in page, "the notebook was not executed through the reader"
    assert "hidden_value = 41" not in page, "a `#| hide` cell is shown"
    assert re.search(r'<div class="exercise admonition" id="ex-demo-scale">', page), "no exercise rendered"
    assert re.search(r'<div class="solution dropdown admonition"', page), "the solution is not folded away"
    assert "```{exercise}" not in page and "{solution}" not in page, "a directive shown as raw text"
    cite = re.search(r'(?s)<span class="bibtex-citation"[^>]*>(.*?)</span>', page)
    assert cite and 'href="refs.html#' in cite.group(1) and "Devlin" in cite.group(1), "citation not linked"
    assert 'class="math notranslate nohighlight"' in page
    assert re.search(r'<script[^>]+src="\.\./_static/mathjax/tex-chtml\.js', page), "MathJax not served locally"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    front = (site / "book" / "index.html").read_text(encoding="utf-8")
    table = re.search(r"(?s)<th[^>]*>\s*<p>Chapter</p>.*?</table>", front)
    assert table, "no execution-time table on the front page"
    assert "Modified" not in table.group(0) and "Method" not in table.group(0)
    row = re.search(r'(?s)<tr[^>]*><td><p><a [^>]*href="demo.html"><span[^>]*>Demo chapter</span></a></p></td>'
                    r'\s*<td><p>([0-9.]+)</p></td>\s*<td><p>✅</p></td>', table.group(0))
    assert row and float(row.group(1)) > 0, f"the table does not list the executed notebook: {table.group(0)}"
