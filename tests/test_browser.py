"""The built book in headless Chromium: every page loads, every image has pixels, no page errors.

Needs ``_build/html`` (``make book``) and Debian's ``chromium``; run with ``pytest -m browser``.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser

# A page is ready when it has loaded and every image has arrived: waited for as such, not as
# "no network for 500 ms" (Playwright's networkidle, which a busy 2-core machine missed within
# its 30 s default on chapter 04). The limit scales with the machine's load.
TIMEOUT_MS = 60_000 * max(1, round(os.getloadavg()[0] / (os.cpu_count() or 1)) + 1)
READY = "() => document.readyState === 'complete' && [...document.images].every(i => i.complete)"


def open_page(pg, url):
    """``url`` loaded in ``pg`` and ready (``READY``); the response."""
    response = pg.goto(url, wait_until="load", timeout=TIMEOUT_MS)
    pg.wait_for_function(READY, timeout=TIMEOUT_MS)
    return response


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").is_file():
        pytest.fail("_build/html/index.html is missing: build the book first (make book).")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def pages() -> list[str]:
    skip = {"genindex.html", "search.html"}
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts)


def test_the_book_has_its_chapters():
    assert "notebooks/00_victims.html" in pages() and "book/summary.html" in pages()


@pytest.mark.parametrize("page", pages() or ["index.html"])
def test_page_renders(page, server, browser, tmp_path):
    ctx = browser.new_context()
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    response = open_page(pg, f"{server}/{page}")
    assert response is not None and response.ok, f"{page}: HTTP {response and response.status}"
    broken = pg.evaluate("""() => Array.from(document.images)
        .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src)""")
    assert broken == [], f"{page}: images without pixels: {broken}"
    assert errors == [], f"{page}: page errors: {errors}"
    assert pg.title(), f"{page}: no title"
    ctx.close()


def test_chapter_00_shows_figures_and_glued_numbers(server, browser):
    pg = browser.new_page()
    open_page(pg, f"{server}/notebooks/00_victims.html")
    # the formulas are typeset by the MathJax the book serves itself (no CDN)
    pg.wait_for_selector("mjx-container", timeout=TIMEOUT_MS)
    n_images = pg.evaluate("() => document.querySelectorAll('div.cell_output img').length")
    assert n_images >= 4, f"expected the chapter's figures, found {n_images}"
    text = pg.inner_text("article")
    assert "reaches an AUC of 0." in text or "reaches an AUC of 1." in text
    pg.screenshot(path=str(ROOT / "_build" / "chapter00.png"), full_page=True)
    pg.close()


def test_chapter_02_widget_renders_offline_beside_its_static_figure(server, browser):
    pg = browser.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    failed = []
    pg.on("requestfailed", lambda req: failed.append(req.url))
    open_page(pg, f"{server}/notebooks/02_sima.html")
    # the html-manager (served by the book) replaces the widget's placeholder by real controls
    pg.wait_for_selector(".widget-slider", timeout=TIMEOUT_MS)
    images = pg.evaluate("""() => Array.from(document.querySelectorAll('.jupyter-widgets img, .widget-image'))
        .map(img => img.naturalWidth)""")
    assert images and max(images) > 0, "the widget shows no figure"
    # dragging each slider (the time step, the threshold; here: two key presses) shows another
    # figure in its own widget only, with no kernel behind the page
    visible = "() => Array.from(document.querySelectorAll('.widget-image')).filter(i => i.offsetParent).map(i => i.src)"
    sliders = pg.query_selector_all(".widget-slider [role=slider]")
    assert len(sliders) == 2, "chapter 02 has two sliders: the time step and the threshold"
    for i, slider in enumerate(sliders):
        before = pg.evaluate(visible)
        slider.focus()
        pg.keyboard.press("ArrowRight")
        pg.keyboard.press("ArrowRight")
        pg.wait_for_timeout(300)
        after = pg.evaluate(visible)
        assert len(before) == len(after) == len(sliders), (before, after)
        assert [j for j in range(len(after)) if before[j] != after[j]] == [i], (i, before, after)
    static = pg.evaluate("() => document.querySelectorAll('div.cell_output img').length")
    assert static >= 4, "the static figures are missing"
    assert errors == [] and failed == [], (errors, failed)
    pg.close()


def test_every_table_and_code_cell_fits_its_page(server, browser):
    """At a laptop's 1366 px every table, code cell and printed output of the book fits the text
    column: nothing sits in a scroll area off-screen (tables.stacked splits the results tables;
    book.css wraps words in tables and long lines of code and output)."""
    pg = browser.new_page(viewport={"width": 1366, "height": 900})
    wide = {}
    for page in pages():
        if page == "index.html":  # a redirect to the introduction, measured as its own page
            continue
        open_page(pg, f"{server}/{page}")
        found = pg.evaluate("""() => [...document.querySelectorAll('div.cell_output table')]
            .filter(t => t.scrollWidth > t.clientWidth + 1)
            .map(t => `${t.scrollWidth} px > ${t.clientWidth}: ${t.querySelector('th, td')?.innerText ?? ''}`)
            .concat([...document.querySelectorAll('div.cell div.highlight pre, div.cell_output pre')]
            .filter(p => p.scrollWidth > p.clientWidth + 1)
            .map(p => `code ${p.scrollWidth} px > ${p.clientWidth}: ${p.innerText.slice(0, 60)}`))""")
        if found:
            wide[page] = found
    pg.close()
    assert wide == {}, f"tables or code wider than the page: {wide}"
