"""The web page in a real headless Chromium (Debian's package, driven by Playwright; no browser download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import diffsearch

CHROMIUM = os.environ.get("DIFFSEARCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SLOW_GMM = Path(__file__).with_name("slow_gmm.py")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_page_shows_progress_and_plots_in_a_browser(make_server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    server = make_server()
    name = diffsearch.Client(server.url).submit({"model": f"{SLOW_GMM}:make", "budget": "4nfe", "strategy": "random", "evals": 30,
                                                 "search_samples": 200, "final_samples": 400, "cache": False, "study": "browser"})
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("response", lambda response: response.status >= 500 and errors.append(f"{response.status} {response.url}"))
        page.goto(server.url + "/")
        count = page.locator(f'tr[data-name="{name}"] .progress-count')
        count.wait_for(timeout=60_000)
        first = count.inner_text()
        page.wait_for_function("([selector, text]) => { const node = document.querySelector(selector); return node && node.textContent !== text; }",
                               arg=[f'tr[data-name="{name}"] .progress-count', first], timeout=60_000, polling=200)
        page.wait_for_function("() => { const img = document.getElementById('plot-best_so_far');"
                               " return img && img.complete && img.naturalWidth > 0; }", timeout=60_000)
        assert page.locator("#top tbody tr").count() >= 1
        page.wait_for_function("() => document.querySelectorAll('#plots img').length === 2 &&"
                               " [...document.querySelectorAll('#plots img')].every(img => img.complete && img.naturalWidth > 0)", timeout=60_000)
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        if os.environ.get("DIFFSEARCH_SCREENSHOT"):
            page.screenshot(path=os.environ["DIFFSEARCH_SCREENSHOT"], full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "page.png").stat().st_size > 10_000
