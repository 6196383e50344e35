"""The playground page in a real browser (Debian's chromium, headless) against a real gateway and Triton."""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import GATEWAY_KEY, REPO, Gateway, Server

pytestmark = pytest.mark.e2e

QUERY = "what is BGE M3?"
PASSAGES = ["BGE M3 is an embedding model: dense, sparse and multi-vector retrieval.",
            "Paris is the capital of France.",
            " ".join(f"long passage word{i}" for i in range(300))]
PASSAGE_LENGTH = 64
SCREENSHOTS = REPO / ".cache" / "screenshots"  # docs/ holds copies for the README


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: scripts/setup.sh test installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, width: int = 1200) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, url: str) -> None:
        self.page.goto(url)

    def status(self, timeout_ms: int = 60_000) -> tuple[str, str]:
        """The status line once it is no longer busy: (text, class)."""
        self.page.wait_for_function("() => { const s = document.getElementById('status');"
                                    " return s.textContent && !s.classList.contains('busy'); }", timeout=timeout_ms)
        box = self.page.locator("#status")
        return box.inner_text(), box.get_attribute("class") or ""


def post(gateway: Gateway, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(gateway.url + path, json=body, headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                          timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def shared_ids(gateway: Gateway, passage: str) -> set[int]:
    query = post(gateway, "/v1/m3/embed", {"texts": [QUERY], "mode": "query", "return_dense": False})["data"][0]
    doc = post(gateway, "/v1/m3/embed", {"texts": [passage], "mode": "passage", "max_length": PASSAGE_LENGTH,
                                         "return_dense": False})["data"][0]
    return set(query["sparse"]["indices"]) & set(doc["sparse"]["indices"])


def test_shared_url_shows_the_apis_numbers(browser: Any, gateway: Gateway, server: Server) -> None:
    params = urllib.parse.urlencode([("q", QUERY), *[("p", p) for p in PASSAGES], ("w", "0.4,0.2,0.4"),
                                     ("pl", str(PASSAGE_LENGTH))])
    tab = Page(browser)
    tab.open(f"{gateway.url}/?{params}#key={GATEWAY_KEY}")
    text, kind = tab.status()
    assert "error" not in kind and text.startswith("Scored 3 passage(s)"), text
    tab.page.wait_for_selector("#alignment-table tbody tr")

    expected = post(gateway, "/v1/m3/score", {"query": QUERY, "passages": PASSAGES, "weights": [0.4, 0.2, 0.4],
                                              "max_passage_length": PASSAGE_LENGTH})["scores"]
    cross = {r["index"]: r["relevance_score"]
             for r in post(gateway, "/v1/rerank", {"query": QUERY, "documents": PASSAGES})["results"]}
    for index, scores in enumerate(expected):
        row = tab.page.locator(f"#score-table tr[data-passage='{index}']")
        for name in ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"):
            shown = float(row.locator(f"td[data-score='{name}']").inner_text())
            assert abs(shown - scores[name]) <= 6e-5, (index, name, shown, scores[name])
        assert abs(float(row.locator("td[data-score='cross-encoder']").inner_text()) - cross[index]) <= 6e-5
    # ranked by the combined score, best first
    order = [int(r.get_attribute("data-passage")) for r in tab.page.locator("#score-table tbody tr").all()]
    assert order == sorted(range(3), key=lambda i: -expected[i]["colbert+sparse+dense"])

    card = tab.page.locator(".card[data-passage='0']")
    shown_shared = {int(li.get_attribute("data-token")) for li in card.locator(".shared-list li").all()}
    assert shown_shared == shared_ids(gateway, PASSAGES[0]) and shown_shared
    assert card.locator(".tok.shared").count() >= len(shown_shared)
    # every character once, though XLM-R gives the lone "▁" before "embedding" the span of its "e"
    assert card.locator(".heat").text_content() == PASSAGES[0]
    assert card.locator(".tok.empty").count() >= 1
    badge = tab.page.locator(".card[data-passage='2'] .badge.truncated")
    assert badge.inner_text() == f"truncated at {PASSAGE_LENGTH} tokens"
    assert tab.page.locator(".card[data-passage='2'] .tok.cut").count() > 0
    assert tab.page.locator(".card[data-passage='0'] .badge").count() == 0

    top = order[0]
    explained = post(gateway, "/v1/m3/explain", {"query": QUERY, "passage": PASSAGES[top],
                                                 "max_passage_length": PASSAGE_LENGTH})
    assert abs(explained["colbert"]["score"] - expected[top]["colbert"]) <= 1e-5
    assert tab.page.locator("#alignment-table tbody tr").count() == explained["colbert"]["rows"]
    assert tab.page.locator("#share").get_attribute("href").startswith("/?q=")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SCREENSHOTS / "playground.png"), full_page=True,
                        clip={"x": 0, "y": 0, "width": 1200, "height": 1500})
    tab.page.locator("#alignment").screenshot(path=str(SCREENSHOTS / "playground-colbert.png"))
    assert tab.errors == []


def test_phone_width_has_no_horizontal_page_scroll(browser: Any, gateway: Gateway) -> None:
    params = urllib.parse.urlencode([("q", QUERY), ("p", PASSAGES[0]), ("p", PASSAGES[1])])
    tab = Page(browser, width=375)
    tab.open(f"{gateway.url}/?{params}#key={GATEWAY_KEY}")
    assert tab.status()[0].startswith("Scored")
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 375
    assert tab.errors == []


@pytest.mark.parametrize(("query", "message"), [("?q=&p=x", "Enter a query."),
                                                 ("?q=hello", "Add at least one passage with some text."),
                                                 ("?q=hello&p=x&w=0,0,1", "must not both be 0")])
def test_bad_forms_say_why(browser: Any, gateway: Gateway, query: str, message: str) -> None:
    tab = Page(browser)
    tab.open(f"{gateway.url}/{query}#key={GATEWAY_KEY}")
    text, kind = tab.status()
    assert "error" in kind and message in text
    assert tab.errors == []


def test_a_megabyte_passage_is_read_up_to_the_limit(browser: Any, gateway: Gateway) -> None:
    tab = Page(browser)
    tab.open(f"{gateway.url}/#key={GATEWAY_KEY}")
    tab.page.fill("#query", QUERY)
    tab.page.locator("#passages textarea").first.fill("a very long passage " * 52_500)  # 1.05 MB
    tab.page.click("#run")
    text, kind = tab.status(120_000)
    assert "error" not in kind and "were cut to the max length" in text, text
    assert tab.page.locator(".card .badge.truncated").count() == 1
    assert "more characters" in tab.page.locator(".card .cut-text").inner_text()
    assert tab.page.locator("#share").is_hidden()  # too long to share as a link


def test_missing_key_and_a_stopped_gateway_are_explained(browser: Any, server: Server, tmp_path: Path) -> None:
    keyed = Gateway(server.grpc, tmp_path / "keyed.log", env={"BGE_M3_API_KEY": "another-key"})
    try:
        tab = Page(browser)
        tab.open(f"{keyed.url}/?q=hello&p=world")
        text, kind = tab.status()
        assert "error" in kind and "API key" in text and tab.page.locator("#key-box").is_visible()
    finally:
        keyed.stop()
    plain = Gateway(server.grpc, tmp_path / "plain.log")
    tab = Page(browser)
    tab.open(f"{plain.url}/")
    plain.stop()
    tab.page.fill("#query", "hello")
    tab.page.locator("#passages textarea").first.fill("world")
    tab.page.click("#run")
    text, kind = tab.status()
    assert "error" in kind and "Cannot reach the gateway" in text
