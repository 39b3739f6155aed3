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


def _dom(page) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: `make test` installs it (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _visible_text(dom: str) -> str:
    body = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", dom)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_site_was_built():
    assert (HTML / "book" / "index.html").exists(), "no built book: run `make book` before the site checks"


@pytest.mark.parametrize("chapter", _chapters())
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
