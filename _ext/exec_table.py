"""Make myst-nb's `{nb-exec-table}` readable on the front page.

The table myst-nb builds names each notebook by its document path
(`book/06_training`) and has columns a reader has no use for (the file's
modification time, the execution method). Once the table is resolved, this
extension names each notebook by its title, links it as before, and keeps only
the run time and whether the run succeeded. The numbers themselves are
myst-nb's, measured by the build.
"""

from __future__ import annotations

from docutils import nodes

__all__ = ["tidy_exec_tables", "setup"]

_DROP = {"Modified", "Method"}
_RENAME = {"Document": "Chapter", "Run Time (s)": "Run time (s)"}


def _is_exec_table(table: nodes.table) -> bool:
    head = table.next_node(nodes.thead)
    return head is not None and "Run Time (s)" in [
        e.astext() for e in head.findall(nodes.entry)
    ]


def _tidy(table: nodes.table, titles: dict) -> None:
    tgroup = table.next_node(nodes.tgroup)
    header = [
        e.astext()
        for e in table.next_node(nodes.thead).next_node(nodes.row).children
    ]
    drop = [i for i, name in enumerate(header) if name in _DROP]
    for row in tgroup.findall(nodes.row):
        for i in reversed(drop):
            row.remove(row.children[i])
    colspecs = [c for c in tgroup.children if isinstance(c, nodes.colspec)]
    for i in reversed(drop):
        tgroup.remove(colspecs[i])
    tgroup["cols"] = len(header) - len(drop)
    for entry in table.next_node(nodes.thead).findall(nodes.entry):
        par = entry.next_node(nodes.paragraph)
        if par is not None and par.astext() in _RENAME:
            par.replace_self(nodes.paragraph(text=_RENAME[par.astext()]))
    body = table.next_node(nodes.tbody)
    for row in body.children if body is not None else []:
        first = row.children[0]
        for text in list(first.findall(nodes.Text)):
            docname = text.astext()
            if docname in titles:
                text.parent.replace(text, nodes.Text(titles[docname].astext()))


def tidy_exec_tables(app, doctree: nodes.document, docname: str) -> None:
    """`doctree-resolved` handler: tidy every execution-statistics table of the
    page."""
    for table in list(doctree.findall(nodes.table)):
        if _is_exec_table(table):
            _tidy(table, app.env.titles)


def setup(app):
    """Sphinx entry point."""
    app.connect("doctree-resolved", tidy_exec_tables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
