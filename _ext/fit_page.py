"""Fit the code to the book's page: every line at most 80 characters.

Every code cell of the notebooks counts, and every ```python block of their
markdown cells (solutions), which the page shows as code too: those fit 76
characters, as a solution's box shows 79.

`ruff format` breaks long expressions but cannot shorten a long comment, a
long string literal or a long docstring line. This tool first rewrites those
(a long trailing comment moves to its own line above; long comment lines and
docstring prose are re-wrapped; long strings become implicitly concatenated
pieces split at spaces (a regex at `|` or `)`), never inside an f-string's
`{}`; a long line inside a multi-line string gets a backslash-newline, which
the string's value does not contain; a `from scratchformers.x import ...` that
does not fit becomes several one-line imports, because nbdev rewrites only a
one-line import to a relative one), then runs `ruff check --fix --select E401`
and `ruff format`, and repeats until nothing changes. It proves that it changed
no behaviour: the syntax tree of every notebook cell and file is the same before
and after (implicit concatenation parses to one string; one import of several
names is compared as several imports; docstrings are compared with their
whitespace normalised, and every re-wrapped docstring is listed). Lines it
cannot fit are printed as `file:cell:line` for a person to shorten.

    python _ext/fit_page.py            # rewrite book/*.ipynb, benchmarks, _ext
    python _ext/fit_page.py --check    # change nothing; exit 1 if it would
    python _ext/fit_page.py PATH...    # only these notebooks, files, folders

`nbdev` directives (`#|` lines), pragma comments (`# noqa`, `# type:`) and
IPython magics are never changed. Run `make export` afterwards: it exports the
package and tests/ from the cells and runs this tool on `scratchformers/` too
(for nbdev's own long lines: `__all__`, the module docstring).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import token as tk
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from scratchformers.checks import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 80
# a ```python block of a solution: 79 characters fit in its box at 1400 px
FENCE_WIDTH = 76
_HERE = Path(sys.executable).parent / "ruff"
RUFF = str(_HERE) if _HERE.exists() else (shutil.which("ruff") or "ruff")
DEFAULT = ["book/*.ipynb", "benchmarks/*.py", "_ext/*.py", "setup.py"]
PRAGMA = re.compile(r"#\s*(noqa|type:|fmt:|pragma|pyright:|nosec|isort:)")
PRAGMA_END = re.compile(r"\s*#\s*(noqa|type:|pyright:|pragma)\b.*$")
DIRECTIVE = re.compile(r"\s*#\|")
MAGIC = re.compile(r"()[%!](?!=)")  # top-level line magics (ours are)
BULLET = re.compile(r"([-*]|\d+[.)])\s")
STRING = re.compile(r"(?s)([rRbBuUfF]*)('''|\"\"\"|'|\")(.*)\2\Z")
LIB = "scratchformers"


@dataclass
class Unit:
    "One notebook cell or one .py file: the code to fit, and what was done."

    # `book/03_attention.ipynb:cell 12` (a code cell), `...:cell 9:fence 0`
    # (a ```python block in a markdown cell) or `benchmarks/x.py`
    where: str
    source: str
    notebook: bool
    new: str = ""
    width: int = WIDTH
    docstrings: list[str] = field(default_factory=list)


# ---- reading the code --------------------------------------------------------


def _mask(src: str) -> tuple[str, dict[str, str]]:
    "Replace IPython magic lines by placeholders that parse as Python."
    lines, magics = src.split("\n"), {}
    for i, line in enumerate(lines):
        m = MAGIC.match(line)
        if m:
            key = f"{m.group(1)}pass  # fit-page-magic-{i}"
            magics[key] = line
            lines[i] = key
    return "\n".join(lines), magics


def _unmask(src: str, magics: dict[str, str]) -> str:
    return "\n".join(magics.get(line, line) for line in src.split("\n"))


def _tests(src: str) -> bool:
    "Whether a cell is exported to tests/ (its first string: a docstring)."
    return re.search(r"^#\|.*\btest_file\b", src, re.M) is not None


def _tokens(src: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(src).readline))


class _Norm(ast.NodeTransformer):
    "A tree in which formatting-only differences vanish."

    def __init__(self, docs: bool, notebook: bool, tests: bool):
        self.docs, self.notebook, self.tests = docs, notebook, tests

    def _doc(self, node):
        body = getattr(node, "body", None)
        if self.notebook and isinstance(node, ast.Module) and not self.tests:
            return
        if not (self.docs and isinstance(body, list) and body):
            return
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            first.value.value = " ".join(first.value.value.split())

    def generic_visit(self, node):
        self._doc(node)
        for name, value in ast.iter_fields(node):
            if isinstance(value, list):
                out = []
                for item in value:
                    if isinstance(item, ast.AST):
                        item = self.visit(item)
                    if isinstance(item, list):
                        out.extend(item)
                    elif item is not None:
                        out.append(item)
                setattr(node, name, out)
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def visit_Import(self, node):
        return [ast.Import(names=[a]) for a in node.names]

    def visit_ImportFrom(self, node):
        return [
            ast.ImportFrom(module=node.module, names=[a], level=node.level)
            for a in node.names
        ]


def tree(src: str, notebook: bool, docs: bool = True) -> str:
    "The normalised syntax tree of a cell or file, as text."
    if notebook:
        src = _mask(src)[0]
    norm = _Norm(docs, notebook, _tests(src))
    return ast.dump(norm.visit(ast.parse(src)))


def _docstrings(src: str, notebook: bool) -> set[tuple[int, int]]:
    "(start row, start col) of every docstring token."
    out = set()
    for node in ast.walk(ast.parse(src)):
        if notebook and isinstance(node, ast.Module) and not _tests(src):
            continue  # a string alone in a cell is shown as its output
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            out.add((first.value.lineno, first.value.col_offset))
    return out


# ---- the rewrites ------------------------------------------------------------


def _wrap(text: str, width: int, hang: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=max(width, 20),
        subsequent_indent=hang,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _continues(line: str, indent: str, mark: str) -> bool:
    "Whether `line` continues the prose of a wrapped line (same margin)."
    if not line.startswith(indent + mark) or DIRECTIVE.match(line):
        return False
    rest = line[len(indent + mark) :]
    return bool(rest) and not rest[0].isspace() and not BULLET.match(rest)


def _fix_comment(lines: list[str], i: int) -> bool:
    "Wrap an own-line comment; what does not fit joins the next comment line."
    line = lines[i]
    indent = line[: len(line) - len(line.lstrip())]
    m = re.match(r"#+ ?", line.lstrip())
    mark = m.group(0) if m.group(0).endswith(" ") else m.group(0) + " "
    text = line.lstrip()[m.end() :]
    b = BULLET.match(text)
    hang = " " * len(b.group(0)) if b else ""
    rule = re.search(r"([-=#~*])\1{3,}$", text)
    if rule:  # `# ---- section --------`: a shorter rule
        keep = len(line) - WIDTH
        if len(rule.group(0)) - keep >= 4:
            lines[i] = line[:-keep]
            return True
    parts = _wrap(text, WIDTH - len(indent + mark), hang)
    if len(parts) < 2:
        return False
    new = [indent + mark + p for p in parts]
    if i + 1 < len(lines) and _continues(lines[i + 1], indent, mark):
        nxt = lines[i + 1][len(indent + mark) :]
        lines[i : i + 2] = new[:-1] + [new[-1] + " " + nxt.lstrip()]
    else:
        lines[i : i + 1] = new
    return True


def _split_points(body: str, fstring: bool, raw: bool) -> tuple[list, list]:
    """Indices where `body` may be cut: after a space (good), or after `)|.,/]`
    (for strings with no spaces, such as regexes); never in `{...}` or `\\x`."""
    good, weak, depth, j = [], [], 0, 0
    while j < len(body):
        c = body[j]
        if c == "\\":
            if not raw and body.startswith("N{", j + 1):
                j = body.find("}", j) + 1 or len(body)
            else:
                j += 2
            continue
        if fstring and c in "{}":
            if body.startswith(c * 2, j) and depth == 0:
                j += 2
                continue
            depth += 1 if c == "{" else -1
            if depth == 0 and c == "}" and j + 1 < len(body):
                good.append(j + 1)
        elif depth == 0 and j + 1 < len(body):
            if c == " ":
                good.append(j + 1)
            elif c in ")|.,/]":
                weak.append(j + 1)
        j += 1
    return good, weak


def _split_string(text: str, first: int, width: int) -> list[str] | None:
    "Pieces of the literal `text`, the first at most `first` characters long."
    m = STRING.match(text)
    if not m:
        return None
    prefix, quote, body = m.groups()
    f = "f" in prefix.lower()
    good, weak = _split_points(body, f, "r" in prefix.lower())
    if "r" in prefix.lower():  # a regex: a space is no better place than `|`
        good, weak = weak, good
    extra = len(prefix) + 2 * len(quote)

    def cut(first: int, width: int) -> list[str]:
        pieces, start, room = [], 0, first
        while len(body) - start + extra > room:
            end = None
            for points in (good, weak):
                fits = [p for p in points if start < p <= start + room - extra]
                if fits:
                    end = fits[-1]
                    break
            if end is None:
                later = [p for p in good + weak if p > start]
                if not later:
                    break
                end = min(later)
            pieces.append(body[start:end])
            start, room = end, width
        return pieces + [body[start:]]

    pieces = cut(first, width)
    # no orphaned last word: narrower pieces while their number stays the same
    for less in range(2, width // 3, 2):
        if len(pieces) < 2 or len(pieces[-1]) + extra >= width // 3:
            break
        fewer = cut(first - less, width - less)
        if len(fewer) != len(pieces):
            break
        pieces = fewer
    if len(pieces) < 2:
        return None

    def lit(piece: str) -> str:
        plain = f and not re.search(r"[{}]", piece)
        pre = re.sub("[fF]", "", prefix) if plain else prefix
        return pre + quote + piece + quote

    return [lit(p) for p in pieces]


def _fix_string(lines, i, toks, sig, depth_at) -> bool:
    "Split the longest plain string literal on line `i`."
    row = i + 1
    strings = [
        t
        for t in toks
        if t.type == tk.STRING
        and t.start[0] == row
        and t.end[0] == row
        and len(t.string) > 12
    ]
    for t in sorted(strings, key=lambda t: -len(t.string)):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        alone = line.strip().rstrip(",)]}").rstrip() == t.string
        room = WIDTH - t.start[1] - 2 if alone else WIDTH - indent - 10
        pieces = _split_string(t.string, room, room)
        if not pieces:  # it fits alone on a line: any cut lets ruff move it
            pieces = _split_string(t.string, len(t.string) - 1, room)
        if not pieces:
            continue
        # one piece a line: this pass then sees no long line to split again
        joined = ("\n" + " " * (indent + 4)).join(pieces)
        k = sig.index(t)
        prev = sig[k - 1] if k else None
        nxt = sig[k + 1] if k + 1 < len(sig) else None
        glued = tk.STRING in (getattr(prev, "type", 0), getattr(nxt, "type", 0))
        if depth_at(t.start) == 0 and glued:
            continue  # `"a" "b"` outside brackets: parenthesising one breaks it
        keyed = prev is not None and prev.string in (":", "=", "+", "%")
        if depth_at(t.start) == 0 or (keyed and not glued):
            joined = "(" + joined + ")"
        new = line[: t.start[1]] + joined + line[t.end[1] :]
        lines[i : i + 1] = new.split("\n")
        return True
    return False


def _fix_docstring(lines, i, t) -> bool:
    "Re-wrap the prose of docstring token `t` at line `i` (0-based)."
    prefix, quote, body = STRING.match(t.string).groups()
    col, k = t.start[1], i + 1 - t.start[0]
    indent = " " * col
    if len(quote) == 1:  # a one-line "docstring": make it a wrapped """...""".
        if "\\" in body or quote in body or k:
            return False
        q = quote * 3
        words = _wrap(body + q, WIDTH - col - 3 - len(prefix))
        if len(words) < 2:
            return False
        text = f"\n{indent}".join(words)
        lines[i] = lines[i][:col] + prefix + q + text + lines[i][t.end[1] :]
        return True
    doc = t.string.split("\n")
    lead = prefix + quote if k == 0 else ""
    if k == 0:
        text, first_room = doc[0][len(lead) :], WIDTH - col - len(lead)
    elif doc[k].startswith(indent):
        text, first_room = doc[k][col:], WIDTH - col
    else:
        return False
    if text[:1].isspace() or text.startswith((">>>", "|", "..")):
        return False  # indented code, tables, doctests: for a person
    closing = k == len(doc) - 1 and text.endswith(quote)  # stays on the text
    b = BULLET.match(text)
    hang = " " * len(b.group(0)) if b else ""
    parts = _wrap(text, first_room, hang)
    if len(parts) < 2:
        return False
    parts = [parts[0]] + [indent + p for p in parts[1:]]
    parts[0] = (lead if k == 0 else indent) + parts[0]
    nxt = doc[k + 1] if k + 1 < len(doc) else ""
    if (
        not closing
        and nxt.startswith(indent)
        and nxt[col:].strip()
        and not nxt[col:][0].isspace()
        and not BULLET.match(nxt[col:])
        and not nxt[col:].startswith((">>>", "|", "..", quote))
    ):
        doc[k : k + 2] = parts[:-1] + [parts[-1] + " " + nxt[col:]]
    else:
        doc[k : k + 1] = parts
    new = "\n".join(doc)
    first_row = t.start[0] - 1
    last_row = t.end[0] - 1
    before = lines[first_row][: t.start[1]]
    after = lines[last_row][t.end[1] :]
    lines[first_row : last_row + 1] = (before + new + after).split("\n")
    return True


def _fix_in_string(lines, i, t) -> bool:
    """Break a long line inside a multi-line string with a backslash-newline,
    which the string's value does not contain (not in raw or f-strings)."""
    m = STRING.match(t.string)
    if t.type != tk.STRING or not m or re.search("[rRfF]", m.group(1)):
        return False
    line = lines[i]
    end = t.end[1] - len(m.group(2)) if i + 1 == t.end[0] else len(line)
    cuts = [j for j in range(1, min(WIDTH - 1, end)) if line[j - 1] == " "]
    cuts = [j for j in cuts if line[:j].strip() and j < end]
    if not cuts:
        return False
    j = cuts[-1]
    lines[i : i + 1] = [line[:j] + "\\", line[j:]]
    return True


def _unwrap_string(lines, sig) -> bool:
    """`("one string")` -> `"one string"` (parentheses an earlier split left
    after ruff joined the pieces again); never the parentheses of a call."""
    for k in range(1, len(sig) - 2):
        prev, a, t, b = sig[k - 1 : k + 3]
        if not (a.string == "(" and b.string == ")" and t.type == tk.STRING):
            continue
        if a.start[0] != b.end[0] or prev.string in (")", "]", "}"):
            continue
        if prev.type in (tk.NAME, tk.STRING, tk.NUMBER) and not (
            keyword.iskeyword(prev.string)
        ):
            continue
        line = lines[a.start[0] - 1]
        lines[a.start[0] - 1] = line[: a.start[1]] + t.string + line[b.end[1] :]
        return True
    return False


def _paren_concat(lines, sig) -> bool:
    """`key="a "` / `"b"` over several lines (a keyword argument or a dict
    value): parenthesised, so that ruff indents the pieces under the key."""
    stack = []
    for k, t in enumerate(sig):
        if t.type == tk.OP and t.string in "([{":
            stack.append(t.string)
        elif t.type == tk.OP and t.string in ")]}":
            stack = stack[:-1]
        if t.type != tk.STRING or k == 0 or not stack:
            continue
        prev = sig[k - 1]
        if not (
            (prev.string == "=" and stack[-1] == "(")
            or (prev.string == ":" and stack[-1] == "{")
        ):
            continue
        end = k
        while end + 1 < len(sig) and sig[end + 1].type == tk.STRING:
            end += 1
        after = sig[end + 1] if end + 1 < len(sig) else None
        if end == k or t.start[0] == sig[end].end[0]:
            continue  # one string, or all on one line
        if after is None or after.string not in (",", ")", "}"):
            continue
        last = sig[end]
        a, b = t.start[0] - 1, last.end[0] - 1
        lines[b] = lines[b][: last.end[1]] + ")" + lines[b][last.end[1] :]
        lines[a] = lines[a][: t.start[1]] + "(" + lines[a][t.start[1] :]
        return True
    return False


def _reflow_strings(lines, sig) -> bool:
    """Pieces of one implicitly concatenated string, one a line, re-cut to
    fill the lines when that needs fewer lines (ragged pieces come from
    splits made at other widths)."""
    k = 0
    while k < len(sig):
        end = k
        while (
            end + 1 < len(sig)
            and sig[end + 1].type == tk.STRING
            and sig[end].type == tk.STRING
            and sig[end + 1].start[0] == sig[end].end[0] + 1
        ):
            end += 1
        run, k = sig[k : end + 1], end + 1
        if len(run) < 2 or run[0].type != tk.STRING:
            continue
        ms = [STRING.match(t.string) for t in run]
        col = run[0].start[1]
        if any(
            not m or len(m.group(2)) != 1 or t.start[0] != t.end[0]
            for m, t in zip(ms, run)
        ):
            continue
        if any(
            t.start[1] != col or lines[t.start[0] - 1][:col].strip()
            for t in run
        ):
            continue
        if any(lines[t.end[0] - 1][t.end[1] :].strip() for t in run[:-1]):
            continue
        suffix = lines[run[-1].end[0] - 1][run[-1].end[1] :]
        if suffix.strip(",)]} ") or "#" in suffix:
            continue
        kinds = {re.sub("[fF]", "", m.group(1)).lower() for m in ms}
        quotes = {m.group(2) for m in ms}
        is_f = ["f" in m.group(1).lower() for m in ms]
        if len(kinds) > 1 or len(quotes) > 1 or "u" in kinds.pop():
            continue
        if any(is_f) and any(
            not f and re.search("[{}]", m.group(3)) for f, m in zip(is_f, ms)
        ):
            continue
        prefix = next(
            (m.group(1) for f, m in zip(is_f, ms) if f), ms[0].group(1)
        )
        quote = ms[0].group(2)
        lit = prefix + quote + "".join(m.group(3) for m in ms) + quote
        room = WIDTH - col
        pieces = _split_string(lit, room, room) or [lit]
        if len(pieces[-1]) + len(suffix.rstrip()) > room:
            continue
        if len(pieces) >= len(run):
            continue
        pad = " " * col
        new = [pad + piece for piece in pieces]
        new[-1] += suffix
        lines[run[0].start[0] - 1 : run[-1].end[0]] = new
        return True
    return False


def _merge_strings(lines, sig) -> bool:
    """Join two pieces of an implicitly concatenated string, each alone on its
    line, when the joined piece fits (splitting in rounds leaves fragments)."""
    for a, b in zip(sig, sig[1:]):
        if a.type != tk.STRING or b.type != tk.STRING:
            continue
        if b.start[0] != a.end[0] + 1 or a.start[0] != a.end[0]:
            continue
        la, lb = lines[a.start[0] - 1], lines[b.start[0] - 1]
        if la.strip() != a.string or lb[: b.start[1]].strip():
            continue
        ma, mb = STRING.match(a.string), STRING.match(b.string)
        if (
            not ma
            or not mb
            or b.start[0] != b.end[0]
            or ma.group(2) != mb.group(2)
        ):
            continue
        fa, fb = ("f" in m.group(1).lower() for m in (ma, mb))
        pa, pb = (re.sub("[fF]", "", m.group(1)).lower() for m in (ma, mb))
        if pa != pb or "u" in pa:
            continue
        if fa != fb and re.search("[{}]", (mb if fa else ma).group(3)):
            continue
        pre = ma.group(1) if fa or not fb else mb.group(1)
        merged = pre + ma.group(2) + ma.group(3) + mb.group(3) + ma.group(2)
        new = lb[: b.start[1]] + merged + lb[b.end[1] :]
        if len(new) > WIDTH:
            continue
        lines[a.start[0] - 1 : b.start[0]] = [new]
        return True
    return False


def _import_lines(lines, tree_, toks) -> bool:
    """A `from scratchformers.x import ...` on several lines or too long:
    one-line imports that fit (nbdev makes only those relative)."""
    comments = {t.start[0] for t in toks if t.type == tk.COMMENT}
    for node in tree_.body:
        rows = range(node.lineno, node.end_lineno + 1)
        if not (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == LIB
            and not comments.intersection(rows)
            and (len(rows) > 1 or len(lines[node.lineno - 1]) > WIDTH)
            and node.col_offset == 0
        ):
            continue
        head = f"from {node.module} import "
        names = [
            a.name + (f" as {a.asname}" if a.asname else "") for a in node.names
        ]
        out, cur = [], []
        for n in names:
            if cur and len(head + ", ".join(cur + [n])) > WIDTH:
                out.append(head + ", ".join(cur))
                cur = []
            cur.append(n)
        out.append(head + ", ".join(cur))
        if out == lines[node.lineno - 1 : node.end_lineno]:
            continue
        lines[node.lineno - 1 : node.end_lineno] = out
        return True
    return False


def _trailing(i, lines, by_row, inside, pad=None):
    """The trailing comment token of line `i` that may move to a line of its
    own above (not a pragma, not after a string or a backslash continuation);
    with `pad`, only on a line indented by exactly `pad`."""
    if i >= len(lines) or (i + 1) in inside:
        return None
    line = lines[i]
    if pad is not None and not (
        line.startswith(pad) and line[len(pad) : len(pad) + 1] not in " \t"
    ):
        return None
    skip = (tk.NL, tk.NEWLINE, tk.INDENT, tk.DEDENT)
    rt = [t for t in by_row.get(i + 1, []) if t.type not in skip]
    if len(rt) < 2 or rt[-1].type != tk.COMMENT or PRAGMA.search(rt[-1].string):
        return None
    if DIRECTIVE.match(line) or (i and lines[i - 1].rstrip().endswith("\\")):
        return None
    return rt[-1]


def _rewrite_once(src: str, notebook: bool) -> str | None:
    "Fix the first long line that can be fixed; None if none can."
    lines = src.split("\n")
    toks = _tokens(src)
    tree_ = ast.parse(src)
    docs = _docstrings(src, notebook)
    # bracket depth at each token start; rows that start inside a token
    depth, depths, inside = 0, {}, set()
    for t in toks:
        depths[t.start] = depth
        if t.type == tk.OP and t.string in "([{":
            depth += 1
        elif t.type == tk.OP and t.string in ")]}":
            depth -= 1
        for r in range(t.start[0] + 1, t.end[0] + 1):
            inside.add(r)
    noise = (tk.NL, tk.NEWLINE, tk.INDENT, tk.DEDENT, tk.COMMENT)
    sig = [t for t in toks if t.type not in noise]
    by_row: dict[int, list] = {}
    for t in toks:
        by_row.setdefault(t.start[0], []).append(t)
    if notebook and _import_lines(lines, tree_, toks):
        return "\n".join(lines)
    if _merge_strings(lines, sig) or _unwrap_string(lines, sig):
        return "\n".join(lines)
    if _paren_concat(lines, sig) or _reflow_strings(lines, sig):
        return "\n".join(lines)
    for i, line in enumerate(lines):
        if len(line) <= WIDTH or DIRECTIVE.match(line) or PRAGMA.search(line):
            continue
        row = i + 1
        # a docstring line (the token may start on an earlier row)
        doc = next(
            (
                t
                for t in toks
                if t.type == tk.STRING
                and (t.start[0], t.start[1]) in docs
                and t.start[0] <= row <= t.end[0]
            ),
            None,
        )
        if doc is not None:
            if _fix_docstring(lines, i, doc):
                return "\n".join(lines)
            continue
        if row in inside:
            t = next(t for t in toks if t.start[0] < row <= t.end[0])
            if _fix_in_string(lines, i, t):
                return "\n".join(lines)
            continue
        skip = (tk.NL, tk.NEWLINE, tk.INDENT, tk.DEDENT)
        rt = [t for t in by_row.get(row, []) if t.type not in skip]
        if rt and rt[0].type == tk.COMMENT:
            if _fix_comment(lines, i):
                return "\n".join(lines)
            continue
        if _trailing(i, lines, by_row, inside) is not None:
            # its neighbours' trailing comments move too: one style a block
            pad = line[: len(line) - len(line.lstrip())]
            first = last = i
            while first > 0 and _trailing(
                first - 1, lines, by_row, inside, pad
            ):
                first -= 1
            while _trailing(last + 1, lines, by_row, inside, pad):
                last += 1
            for j in range(last, first - 1, -1):
                c = _trailing(j, lines, by_row, inside)
                code = lines[j][: c.start[1]].rstrip()
                lines[j : j + 1] = [pad + c.string, code]
            return "\n".join(lines)
        if _fix_string(lines, i, rt, sig, lambda pos: depths.get(pos, 0)):
            return "\n".join(lines)
    return None


def rewrite(src: str, notebook: bool, width: int = 80) -> str:
    "Apply the rewrites until no long line of `width` can be fixed by them."
    global WIDTH
    WIDTH, saved = width, WIDTH  # the rewrites read the module's WIDTH
    try:
        return _rewrite(src, notebook)
    finally:
        WIDTH = saved


def _rewrite(src: str, notebook: bool) -> str:
    masked, magics = _mask(src) if notebook else (src, {})
    if masked.lstrip().startswith("%%"):
        return src
    for _ in range(500):
        new = _rewrite_once(masked, notebook)
        if new is None:
            break
        try:
            ast.parse(new)
        except SyntaxError:
            break  # a rewrite this tool got wrong: keep the last good text
        masked = new
    return _unmask(masked, magics)


# ---- ruff, over a temporary copy ---------------------------------------------


def _ruff(units: list[Unit], templates: dict[str, dict]) -> None:
    "Run `ruff check --fix` and `ruff format` on `unit.new`, in place."
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[Path, list[Unit]] = {}
        names: dict[str, Path] = {}
        for u in units:
            name = u.where.split(":")[0]
            key = f"{u.width}/{name}"
            if key not in names:
                base = f"{len(names)}_{Path(name).name}"
                names[key] = Path(tmp) / str(u.width) / base
            files.setdefault(names[key], []).append(u)
        for path, us in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if us[0].notebook:
                nb = dict(templates[us[0].where.split(":")[0]])
                nb["cells"] = [
                    {
                        "cell_type": "code",
                        "source": u.new,
                        "metadata": {},
                        "outputs": [],
                        "execution_count": None,
                    }
                    for u in us
                ]
                path.write_text(json.dumps(nb), encoding="utf-8")
            else:
                path.write_text(us[0].new, encoding="utf-8")
        cfg = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
        fix = [
            "check",
            "--fix-only",
            "--select",
            "E401",
            "--quiet",
            "--exit-zero",
        ]
        for width in sorted({u.width for u in units}):
            fmt = ["format", "--quiet", "--line-length", str(width)]
            for cmd in (fix, fmt):
                r = subprocess.run(
                    [RUFF, *cmd, *cfg, str(Path(tmp) / str(width))],
                    capture_output=True,
                    text=True,
                )
                if r.returncode:
                    raise SystemExit(
                        f"fit_page: ruff {cmd[0]} failed:\n{r.stderr}{r.stdout}"
                    )
        for path, us in files.items():
            if us[0].notebook:
                cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
                for u, c in zip(us, cells, strict=True):
                    s = c["source"]
                    u.new = s if isinstance(s, str) else "".join(s)
            else:
                us[0].new = path.read_text(encoding="utf-8")


# ---- driving it --------------------------------------------------------------


FENCE = re.compile(
    r"(?ms)^(?P<fence>`{3,})(?:python|py|ipython3?)[ \t]*\n"
    r"(?P<code>.*?)^(?P=fence)[ \t]*$"
)


def _fences(markdown: str) -> list[re.Match]:
    "The ```python blocks of a markdown cell (exercise solutions, examples)."
    return list(FENCE.finditer(markdown))


def _parses(code: str) -> bool:
    try:
        ast.parse(_mask(code)[0])
    except SyntaxError:
        return False
    return True


def _label(p: Path) -> str:
    "How a file is named in messages: relative to the working directory."
    return Path(os.path.relpath(p.resolve(), Path.cwd())).as_posix()


def _units(paths: list[Path]) -> tuple[list[Unit], dict[str, dict]]:
    units, templates = [], {}
    for p in paths:
        rel = _label(p)
        if p.suffix == ".ipynb":
            nb = json.loads(p.read_text(encoding="utf-8"))
            templates[rel] = {k: v for k, v in nb.items() if k != "cells"}
            for n, c in enumerate(nb["cells"]):
                s = c["source"]
                s = s if isinstance(s, str) else "".join(s)
                if c["cell_type"] == "code":
                    units.append(Unit(f"{rel}:cell {n}", s, True, s))
                elif c["cell_type"] == "markdown":
                    for k, m in enumerate(_fences(s)):
                        code = m.group("code").rstrip("\n")  # as a cell's
                        if _parses(code):
                            w = f"{rel}:cell {n}:fence {k}"
                            units.append(Unit(w, code, True, code, FENCE_WIDTH))
        else:
            s = p.read_text(encoding="utf-8")
            units.append(Unit(rel, s, False, s))
    return units, templates


def _write(paths: list[Path], units: list[Unit]) -> list[str]:
    "Write the changed cells and files; return what changed."
    by_where = {u.where: u for u in units}
    changed = []
    for p in paths:
        rel = _label(p)
        if p.suffix == ".ipynb":
            nb = json.loads(p.read_text(encoding="utf-8"))
            dirty = False
            for n, c in enumerate(nb["cells"]):
                u = by_where.get(f"{rel}:cell {n}")
                if u and u.new != u.source:
                    c["source"] = u.new.splitlines(keepends=True)
                    dirty = True
                if c["cell_type"] != "markdown":
                    continue
                md = "".join(c["source"])
                parts, end = [], 0
                for k, m in enumerate(_fences(md)):
                    u = by_where.get(f"{rel}:cell {n}:fence {k}")
                    if u and u.new != u.source:
                        code = u.new.rstrip("\n") + "\n"
                        parts += [md[end : m.start("code")], code]
                        end = m.end("code")
                if parts:
                    md = "".join(parts) + md[end:]
                    c["source"] = md.splitlines(keepends=True)
                    dirty = True
            if dirty:
                text = json.dumps(
                    nb, sort_keys=True, indent=1, ensure_ascii=False
                )
                atomic_write_text(text + "\n", p)
                changed.append(rel)
        else:
            u = by_where[rel]
            if u.new != u.source:
                atomic_write_text(u.new, p)
                changed.append(rel)
    return changed


def fit(units: list[Unit], templates: dict[str, dict], rounds: int = 6) -> None:
    for _ in range(rounds):
        before = [u.new for u in units]
        for u in units:
            u.new = rewrite(u.new, u.notebook, u.width)
        _ruff(units, templates)
        if [u.new for u in units] == before:
            return


def verify(units: list[Unit]) -> list[str]:
    "Units whose behaviour might have changed (they are left as they were)."
    bad = []
    for u in units:
        if u.new == u.source:
            continue
        try:
            same = tree(u.source, u.notebook) == tree(u.new, u.notebook)
        except SyntaxError as e:
            same, why = False, f"does not parse ({e})"
        else:
            why = "its syntax tree changed"
        if not same:
            bad.append(f"{u.where}: {why}; left unchanged")
            u.new = u.source
        elif tree(u.source, u.notebook, False) != tree(
            u.new, u.notebook, False
        ):
            u.docstrings.append(u.where)
    return bad


def leftovers(units: list[Unit]) -> list[str]:
    out = []
    for u in units:
        for n, line in enumerate(u.new.split("\n"), 1):
            # as ruff's E501: a trailing pragma comment does not count
            if len(PRAGMA_END.sub("", line)) > u.width:
                out.append(
                    f"{u.where}:line {n}: {len(line)} chars: "
                    f"{line.strip()[:60]}"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "paths", nargs="*", type=Path, help="default: " + " ".join(DEFAULT)
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if anything would change",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only what could not be fitted",
    )
    args = p.parse_args(argv)
    paths = []
    for a in args.paths or [ROOT / g for g in DEFAULT]:
        if a.is_dir():
            paths += sorted(f for f in a.glob("*.py") if f.name != "_modidx.py")
        elif "*" in a.name:
            paths += sorted(a.parent.glob(a.name))
        else:
            paths.append(a)
    units, templates = _units(paths)
    fit(units, templates)
    for line in verify(units):
        print("NOT CHANGED:", line)
    for u in units:
        for w in u.docstrings if not args.quiet else []:
            print("docstring re-wrapped (whitespace only):", w)
    left = leftovers(units)
    for line in left:
        print("too long:", line)
    if args.check:
        changed = [u.where for u in units if u.new != u.source]
        for w in changed:
            print("would change:", w)
        return 1 if changed else 0
    for rel in _write(paths, units):
        if not args.quiet:
            print("wrote", rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
