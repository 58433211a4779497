"""The page at `/`, end to end in a real headless Chromium (Debian's `chromium`, driven by Playwright)
against the shared loopback server: every tab, a bad input, and no JavaScript errors along the way.

Chromium is /usr/bin/chromium (or $FOLIO_CHROMIUM). Without it these tests skip, unless FOLIO_REQUIRE_BROWSER=1
(CI sets it), when they fail.
"""

import os
import re
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("FOLIO_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("FOLIO_REQUIRE_BROWSER") == "1"
TIMEOUT_MS = 20_000  # generous: CI shares 2 cores

# slow: every test here needs the session's four trained models (tests/serve/conftest.py) and a browser
pytestmark = pytest.mark.slow

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the [dev] extra brings it
    sync_playwright = None

_MISSING = (f"the browser tests need Playwright (pip install -e '.[dev]') and Chromium at {CHROMIUM} "
            "(apt-get install chromium)")
if (sync_playwright is None or not CHROMIUM.is_file()) and not REQUIRED:
    pytest.skip(_MISSING, allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None or not CHROMIUM.is_file():
        pytest.fail(f"FOLIO_REQUIRE_BROWSER=1 but {_MISSING}")
    with sync_playwright() as playwright:
        # --no-sandbox: CI and this container run as root, where Chromium refuses its sandbox.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        expect.set_options(timeout=TIMEOUT_MS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the loaded page, its model lists filled; `page.console_errors` collects what
    the page logged as errors (console.error, uncaught exceptions, failed requests)."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(f"{message.text} [{message.location.get('url')}]")
           if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    tab.console_errors = errors
    tab.goto(server + "/")
    for select in ("gen-model", "cls-model", "tr-model", "cap-model"):
        expect(tab.locator(f"#{select} option")).to_have_count(1)
    yield tab
    context.close()


def _open(page, tab: str) -> None:
    page.click(f'nav button[data-tab="{tab}"]')
    expect(page.locator(f"section#{tab}")).to_be_visible()
    assert page.locator("section:visible").count() == 1


def test_generate_streams_text_into_the_page(page):
    expect(page.locator("section#generate")).to_be_visible()  # the first tab is open on load
    page.fill("#gen-prompt", "JULIET:\n")
    page.fill("#gen-length", "60")
    # Count the writes to the output: the page shows each streamed piece as it comes, not one answer at
    # the end. (Records, not callbacks: the observer batches the writes of one network chunk.)
    page.evaluate("""() => {
        window.genWrites = 0;
        new MutationObserver((records) => window.genWrites += records.length)
            .observe(document.getElementById("gen-out"), {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#gen-run")
    expect(page.locator("#gen-out")).to_have_attribute("data-done", "true")
    text = page.text_content("#gen-out")
    assert text.startswith("JULIET:\n") and len(text) == len("JULIET:\n") + 60
    assert page.evaluate("window.genWrites") > 10
    assert "error" not in (page.get_attribute("#gen-out", "class") or "")
    # A second run starts over: `data-done` is cleared the moment it is clicked.
    assert page.evaluate("""() => { document.getElementById("gen-run").click();
                                    return document.getElementById("gen-out").dataset.done ?? null; }""") is None
    expect(page.locator("#gen-out")).to_have_attribute("data-done", "true")
    assert page.console_errors == []


def test_generate_shows_an_error_that_arrives_mid_stream(page):
    # The server reports a failure after the stream has started as an `event: error`; fake one.
    body = 'data: {"text": "abc"}\n\nevent: error\ndata: {"detail": "the model ran out of road"}\n\n'
    page.route("**/v1/generate", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))
    page.click("#gen-run")
    expect(page.locator("#gen-out.error")).to_have_text("the model ran out of road")
    assert page.get_attribute("#gen-out", "data-done") is None
    assert page.console_errors == []


def test_classify_shows_the_label_and_colours_each_token(page):
    _open(page, "classify")
    page.fill("#cls-text", "a brilliant wonderful film")
    page.click("#cls-run")
    expect(page.locator("#cls-label")).to_have_text(re.compile(r"^pos \(\d\.\d{3}\)$"))
    assert 0.5 <= float(page.text_content("#cls-label")[5:-1]) <= 1
    tokens = page.locator("#cls-tokens span.token")
    assert [t.strip() for t in tokens.all_text_contents()] == ["a", "brilliant", "wonderful", "film"]
    backgrounds = tokens.evaluate_all("spans => spans.map((s) => getComputedStyle(s).backgroundColor)")
    assert all(b.startswith("rgba(") or b.startswith("rgb(") for b in backgrounds)
    assert sum(b not in ("rgba(0, 0, 0, 0)", "transparent") for b in backgrounds) >= 2  # the strong words light up
    assert page.console_errors == []


def test_a_bad_input_shows_the_error_and_the_page_stays_usable(page):
    _open(page, "classify")
    page.fill("#cls-text", "a wonderful film")
    page.click("#cls-run")
    expect(page.locator("#cls-tokens span.token")).to_have_count(3)
    page.fill("#cls-text", "   ")
    page.click("#cls-run")
    expect(page.locator("#cls-label.error")).to_contain_text("empty")
    expect(page.locator("#cls-tokens span")).to_have_count(0)  # no stale colours from the last text
    page.fill("#cls-text", "an awful boring film")
    page.click("#cls-run")
    expect(page.locator("#cls-label")).not_to_have_class("error")
    expect(page.locator("#cls-label")).to_contain_text("neg (")
    expect(page.locator("#cls-tokens span.token")).to_have_count(4)
    # The browser reports the 422 response itself as a console error; nothing else may appear.
    assert [e for e in page.console_errors if "status of 422" not in e] == []


def test_an_error_page_that_is_not_json_is_shown_as_its_text(page):
    # A proxy in front of the server, or a crash, answers with plain text rather than FastAPI's JSON.
    page.route("**/v1/translate", lambda route: route.fulfill(status=502, content_type="text/plain", body="Bad Gateway"))
    _open(page, "translate")
    page.fill("#tr-text", "one")
    page.click("#tr-run")
    expect(page.locator("#tr-out.error")).to_have_text("Bad Gateway")
    expect(page.locator("#tr-attention table")).to_have_count(0)
    assert [e for e in page.console_errors if "status of 502" not in e] == []


def test_translate_shows_the_translation_and_its_attention_table(page):
    _open(page, "translate")
    page.select_option("#tr-model", "numbers")
    page.fill("#tr-text", "three one")
    page.click("#tr-run")
    expect(page.locator("#tr-out")).to_have_text("trois un")
    table = page.locator("#tr-attention table.attention")
    expect(table).to_have_count(1)
    sources = [s.lstrip("▁") for s in table.locator("th.col").all_text_contents()]  # word pieces: ▁ starts a word
    assert sources[:2] == ["three", "one"]
    rows = table.locator("tr")
    targets = [rows.nth(i).locator("th").text_content().lstrip("▁") for i in range(1, rows.count())]
    assert targets[:2] == ["trois", "un"]
    for i in range(1, rows.count()):
        cells = rows.nth(i).locator("td")
        assert cells.count() == len(sources)
        weights = [float(w) for w in cells.evaluate_all("tds => tds.map((td) => td.title)")]
        assert abs(sum(weights) - 1) < 1e-2  # each target word's attention over the source
    assert page.console_errors == []


def _shape_png(path: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle((6, 6, 20, 20), fill="red")
    image.save(path)
    return path


def _painted_pixels(page) -> int:
    return page.evaluate("""() => {
        const canvas = document.getElementById("cap-canvas");
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
        return painted;
    }""")


def _uneven_cells(page, grid: int) -> int:
    return page.evaluate("""(grid) => {
        const canvas = document.getElementById("cap-canvas"), size = canvas.width / grid;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let uneven = 0;
        for (let cy = 0; cy < grid; cy++) for (let cx = 0; cx < grid; cx++) {
            const alphas = new Set();
            for (let y = cy * size; y < (cy + 1) * size; y++)
                for (let x = cx * size; x < (cx + 1) * size; x++) alphas.add(pixels[(y * canvas.width + x) * 4 + 3]);
            if (alphas.size > 1) uneven++;
        }
        return uneven;
    }""", grid)


def test_caption_describes_an_uploaded_image_and_shows_each_words_attention(page, tmp_path):
    _open(page, "caption")
    page.set_input_files("#cap-file", str(_shape_png(tmp_path / "scene.png")))
    page.fill("#cap-beam", "2")
    page.click("#cap-run")
    words = page.locator("#cap-words span")
    expect(words.first).to_be_visible()
    expect(words.first).to_have_class("active")  # the first word's attention is shown at once
    spoken = words.all_text_contents()
    assert spoken[-1] == "</s>" and page.text_content("#cap-out") == " ".join(spoken[:-1])
    assert page.evaluate("document.getElementById('cap-image').src").startswith("data:image/png;base64,")
    expect(page.locator("#cap-image")).to_have_js_property("complete", True)

    page.evaluate("() => { const c = document.getElementById('cap-canvas'); "
                  "c.getContext('2d').clearRect(0, 0, c.width, c.height); }")
    assert _painted_pixels(page) == 0
    words.nth(len(spoken) - 2).click()  # the last real word: its attention grid is drawn over the image
    expect(words.nth(len(spoken) - 2)).to_have_class("active")
    expect(page.locator("#cap-words span.active")).to_have_count(1)
    painted = _painted_pixels(page)
    assert 0 < painted < 256 * 256  # shaded everywhere but where the word looks
    assert _uneven_cells(page, grid=16) == 0  # one shade per grid cell: no seams between cells

    shot = tmp_path / "caption.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.width >= 1000 and len(image.convert("RGB").getcolors(1 << 20) or []) > 50
    assert page.console_errors == []
