"""The notebook reader that hides nbdev's `#|` directives from the website."""
import json
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
