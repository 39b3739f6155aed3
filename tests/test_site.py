"""The built website, as a reader's browser shows it: every chapter rendered with its executed outputs.

Needs `make book` first (`make test` runs it). Uses Debian's headless Chromium.
"""
import html
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

from conftest import ROOT

HTML = ROOT / "_build" / "html"


def _chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def _pages() -> list[str]:
    "Every page of the book: the front page and each file of the table of contents."
    root = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    return [root, *_chapters()]


def _dom(page, budget_ms: int = 5000) -> str:
    "The page's DOM after its scripts ran, in headless Chromium with every network request refused."
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: `make test` installs it (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             # no network: a page that needs a CDN (MathJax, fonts) shows what a reader offline sees
             "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
             "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--virtual-time-budget={budget_ms}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _visible_text(dom: str) -> str:
    body = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", dom)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_site_was_built():
    assert (HTML / "book" / "index.html").exists(), "no built book: run `make book` before the site checks"


def _notebooks() -> list[str]:
    "The chapters that are notebooks (the bibliography page is markdown and runs nothing)."
    return [c for c in _chapters() if (ROOT / f"{c}.ipynb").exists()]


@pytest.mark.parametrize("chapter", _notebooks())
def test_chapter_page_renders_executed_outputs(chapter):
    page = HTML / f"{chapter}.html"
    assert page.exists(), f"{page} missing: run `make book`"
    dom = _dom(page)
    text = _visible_text(dom)
    assert "<h1" in dom, f"{chapter}: no title rendered"
    outputs = len(re.findall(r'class="[^"]*\bcell_output\b', dom))
    assert outputs > 0, f"{chapter}: no executed cell outputs on the page"
    assert "#|" not in text, f"{chapter}: nbdev directive text visible on the page"
    assert "Traceback" not in text, f"{chapter}: a traceback is shown on the page"


def test_front_page_lists_every_chapter():
    text = _visible_text(_dom(HTML / "book" / "index.html"))
    for chapter in _chapters():
        title = (HTML / f"{chapter}.html").read_text(encoding="utf-8")
        h1 = re.search(r"<h1[^>]*>(.*?)<", title, re.S)
        assert h1, f"{chapter} has no title"
        assert html.unescape(h1.group(1)).strip() in text, f"front page does not link {chapter}"


# ---- math, typeset from the site itself (sphinx-mathjax-offline), with no network ----

_MATH = re.compile(r'class="math notranslate nohighlight"')


def _prose_text(dom: str) -> str:
    "Visible text outside code: code blocks and inline code may hold backslashes and dollars legitimately."
    body = re.sub(r"(?s)<(script|style|pre|code|mjx-assistive-mml)\b.*?</\1>", " ", dom)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_mathjax_is_served_by_the_site():
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists(), (
        "MathJax is not in _build/html/_static: add `sphinx-mathjax-offline` to sphinx.extra_extensions")
    for page in _pages():
        src = (HTML / f"{page}.html").read_text(encoding="utf-8")
        remote = re.findall(r'<script[^>]+src="(?:https?:)?//[^"]*mathjax[^"]*"', src, re.I)
        assert not remote, f"{page} loads MathJax from the network: {remote}"


def test_every_formula_is_typeset_offline():
    pages = {p: len(_MATH.findall((HTML / f"{p}.html").read_text(encoding="utf-8"))) for p in _pages()}
    with_math = {p: n for p, n in pages.items() if n}
    assert with_math, "no page of the book has math: the check below would prove nothing"
    for page, formulas in with_math.items():
        dom = _dom(HTML / f"{page}.html", budget_ms=10000)
        typeset = dom.count("<mjx-container")
        assert typeset >= formulas, f"{page}: {typeset} of {formulas} formulas typeset by MathJax"
        assert "<mjx-merror" not in dom, f"{page}: MathJax reports a TeX error"
        text = _prose_text(dom)
        for raw in ("\\(", "\\)", "\\[", "\\]", "$$"):
            i = text.find(raw)
            assert i < 0, f"{page}: raw LaTeX {raw!r} shown: ...{text[max(0, i - 60):i + 60]!r}..."


# ---- the bibliography and the citations that link to it ----

def _bib_entries() -> dict[str, str]:
    "key -> url of every entry of references.bib"
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    entries = re.findall(r"@\w+\{([^,\s]+),(.*?)\n\}", bib, re.S)
    assert entries, "references.bib has no entries"
    urls = {}
    for key, body in entries:
        url = re.search(r"\burl\s*=\s*\{([^}]+)\}", body)
        assert url, f"references.bib: {key} has no url field"
        urls[key] = url.group(1)
    return urls


def test_bibliography_page_lists_every_entry_with_its_link():
    page = HTML / "book" / "references.html"
    assert page.exists(), "no bibliography page: book/references.md must be in _toc.yml"
    src = page.read_text(encoding="utf-8")
    items = re.findall(r'(?s)<div class="citation" id="([^"]+)" role="doc-biblioentry">(.*?)</div>', src)
    urls = _bib_entries()
    assert len(items) == len(urls), f"{len(items)} entries on the page, {len(urls)} in references.bib"
    hrefs = {h for _, body in items for h in re.findall(r'<a class="[^"]*\breference external\b[^"]*" href="([^"]+)"', body)}
    missing = {k: u for k, u in urls.items() if html.escape(u) not in hrefs and u not in hrefs}
    assert not missing, f"bibliography entries without their link: {missing}"


def test_every_citation_resolves_to_the_bibliography():
    targets = set(re.findall(r'<div class="citation" id="([^"]+)"',
                             (HTML / "book" / "references.html").read_text(encoding="utf-8")))
    cited = 0
    for page in _pages():
        src = (HTML / f"{page}.html").read_text(encoding="utf-8")
        text = _prose_text(src)
        assert "{cite" not in text, f"{page}: a citation role shown as raw text"
        for cite in re.findall(r'(?s)<span class="bibtex-citation"[^>]*>(.*?)</span>', src):
            links = re.findall(r'href="(?:references\.html)?#([^"]+)"', cite)
            assert links, f"{page}: unresolved citation (no link): {cite!r}"
            for target in links:
                assert target in targets, f"{page}: citation links to #{target}, not an entry on the references page"
            cited += 1
    assert cited, "no page cites anything: the front page cites the BERT and GPT-2 papers"


# ---- the front page's reading path: how long each chapter takes, as measured by the build ----

def _title(chapter: str) -> str:
    h1 = re.search(r"<h1[^>]*>(.*?)<", (HTML / f"{chapter}.html").read_text(encoding="utf-8"), re.S)
    assert h1, f"{chapter} has no title"
    return html.unescape(h1.group(1)).strip()


def test_front_page_shows_each_chapters_execution_time():
    "The `{nb-exec-table}` on the front page is filled by the build: one row per executed notebook."
    src = (HTML / "book" / "index.html").read_text(encoding="utf-8")
    header = re.search(r"<th[^>]*>\s*<p>Run time \(s\)</p>", src)
    assert header, "the front page has no execution-time table (myst-nb's {nb-exec-table}, _ext/exec_table.py)"
    table = src[header.start():src.index("</table>", header.start())]
    rows = {}
    for row in re.findall(r"(?s)<tr[^>]*>(.*?)</tr>", table):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"(?s)<td>(.*?)</td>", row)]
        if cells:
            rows[cells[0]] = cells
    for chapter in _notebooks():
        title = _title(chapter)
        assert title in rows, f"{chapter} ({title!r}) is not in the front page's execution-time table: was it executed?"
        _, runtime, status = rows[title]
        assert float(runtime) > 0, f"{chapter}: run time {runtime!r}"
        assert status == "✅", f"{chapter}: the build's execution did not succeed ({status!r})"


# ---- exercises (sphinx-exercise): every chapter ends with a few, solutions folded away ----

@pytest.mark.parametrize("chapter", _notebooks())
def test_chapter_has_exercises_with_folded_solutions(chapter):
    src = (HTML / f"{chapter}.html").read_text(encoding="utf-8")
    exercises = re.findall(r'<div class="exercise[^"]*admonition[^"]*" id="([^"]+)"', src)
    assert 3 <= len(exercises) <= 5, f"{chapter}: {len(exercises)} exercises (the book gives 3 to 5 per chapter)"
    solutions = re.findall(r'<div class="solution([^"]*)"[^>]*>\s*<p class="admonition-title">'
                           r'.*?href="#([^"]+)"', src, re.S)
    solved = {target for _, target in solutions}
    assert solved >= set(exercises), f"{chapter}: exercises without a solution: {set(exercises) - solved}"
    unfolded = [target for classes, target in solutions if "dropdown" not in classes.split()]
    assert not unfolded, f"{chapter}: solutions shown unfolded (add `:class: dropdown`): {unfolded}"
