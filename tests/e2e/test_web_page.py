"""The web page at `/` in a real browser against a real `vae-serve` on 127.0.0.1.

Headless Chromium is Debian's package (`scripts/browser-deps.sh` installs it; CI runs that
before `make test`), driven by Playwright through `executable_path`: `playwright install`, a
browser download, is never needed. Without Chromium these tests fail, saying how to get it:
a browser test that skips quietly would let the page break unseen.

The page's numbers are checked against the API's own answers for the same inputs, so the
browser-side image work (scaling, greyscale, value range) is held to what a client gets.
Screenshots go to each test's tmp folder; with VAE_SCREENSHOT_DIR set (e.g. docs/img,
as for the README) they are copied there too.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, sync_playwright
from sklearn.datasets import load_breast_cancer, load_digits

from service.dataplane.monitor_flush import MONITOR_FLUSH_S
from tests.bundles import TINY
from tests.e2e.processes import REPO_ROOT, running_server
from training.config import TrainingConfig
from training.pipeline import run_training

DEFAULT_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
API_KEY = "web-page-test-key-0123456789"
VIEWPORT: ViewportSize = {"width": 1280, "height": 860}
# Generous: the CI machine has two cores shared with the server and the browser.
TIMEOUT_MS = 20_000
Digits = tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.int64]]]


def chromium_path() -> str:
    override = os.environ.get("VAE_TEST_CHROMIUM")
    candidates = (override,) if override else CHROMIUM_CANDIDATES
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"headless Chromium not found (looked for {', '.join(c for c in candidates if c)}): "
        "run scripts/browser-deps.sh to install Debian's chromium, or point VAE_TEST_CHROMIUM "
        "at a Chromium binary",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed digits bundle (with its report plots) and a tiny tabular VAE."""
    root = tmp_path_factory.mktemp("web-repository")
    shutil.copytree(DEFAULT_BUNDLE, root / "digits-vae" / "1")
    config = TrainingConfig(**{**TINY, "plots": False, "dataset": "breast-cancer"})  # type: ignore[arg-type]
    run_training(config, root / "cancer-vae" / "1", show_progress=False)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[str]:
    env = {"VAE_DEFAULT_MODEL": "digits-vae", "VAE_WORKERS": "1", "VAE_LOG_LEVEL": "warning"}
    with running_server(env, repository) as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


class PageErrors:
    """Console errors and uncaught exceptions (a CSP violation shows up as one)."""

    def __init__(self, page: Page, allowed: tuple[str, ...] = ()):
        self.messages: list[str] = []
        self.allowed = allowed
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(a in message.text for a in self.allowed):
            self.messages.append(message.text)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()


@pytest.fixture(scope="module")
def digits() -> Digits:
    data = load_digits()
    return data.data, data.target


def screenshot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    copy_to = os.environ.get("VAE_SCREENSHOT_DIR")
    if copy_to:
        target = REPO_ROOT / copy_to
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)


def write_png(values: np.ndarray[Any, np.dtype[np.float64]], path: Path, upscale: int = 16) -> None:
    """An 8x8 digit (0..16, ink high) as a greyscale PNG, light ink on black, scaled up."""
    grey = np.round(values.reshape(8, 8) * 255.0 / 16.0).astype(np.uint8)
    Image.fromarray(grey, mode="L").resize(
        (8 * upscale, 8 * upscale), Image.Resampling.NEAREST
    ).save(path)


def as_the_page_sends(values: np.ndarray[Any, np.dtype[np.float64]]) -> list[float]:
    # 8-bit pixels mapped back onto 0..16: what the page computes from the PNG.
    return [float(v) for v in np.round(values * 255.0 / 16.0) / 255.0 * 16.0]


def canvas_pixels(page: Page, selector: str) -> list[int]:
    """The red channel of each pixel of a greyscale canvas."""
    data: list[int] = page.eval_on_selector(
        selector,
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
        ".filter((_, i) => i % 4 === 0)",
    )
    return data


def expected_pixels(values: list[float]) -> list[int]:
    return [round(255 * min(max(v / 16.0, 0.0), 1.0)) for v in values]


def open_page(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    page.wait_for_selector("#model-select:not([disabled])")
    page.wait_for_selector("#image-score:not([hidden])")


def test_image_model_upload_reconstruct_and_score(
    page: Page, server: str, digits: Digits, tmp_path: Path
) -> None:
    errors = PageErrors(page)
    images, labels = digits
    digit = images[int(np.flatnonzero(labels == 3)[0])]
    png = tmp_path / "three.png"
    write_png(digit, png)
    open_page(page, server)
    assert "digits-vae" in page.inner_text("#model-summary")

    page.set_input_files("#upload", str(png))
    page.wait_for_selector("#score-result[data-score]")
    sent = as_the_page_sends(digit)
    with httpx.Client(base_url=server, timeout=10.0) as http:
        api_score = http.post(
            "/models/digits-vae/versions/1/anomaly-score", json={"inputs": [sent]}
        ).json()
        api_recon = http.post(
            "/models/digits-vae/versions/1/reconstruct", json={"inputs": [sent]}
        ).json()

    # The page sends what a client would, and shows what the API answers.
    result = page.locator("#score-result")
    assert float(result.get_attribute("data-score") or "nan") == pytest.approx(
        api_score["scores"][0], rel=1e-5
    )
    assert float(result.get_attribute("data-threshold") or "nan") == api_score["threshold"]
    assert result.get_attribute("data-anomaly") == "false"
    assert "Looks normal" in page.inner_text("#verdict")
    assert page.inner_text("#score-value").strip() != ""
    input_pixels = canvas_pixels(page, "#model-input")
    assert input_pixels == expected_pixels(sent)
    recon_pixels = np.asarray(canvas_pixels(page, "#reconstruction"))
    expected = np.asarray(expected_pixels(api_recon["outputs"][0]))
    assert np.abs(recon_pixels - expected).max() <= 1
    screenshot(page, tmp_path, "web-score")

    # Stripes are no digit: the verdict turns.
    stripes = np.asarray([16.0 if (i + i // 8) % 2 == 0 else 0.0 for i in range(64)])
    write_png(stripes, tmp_path / "stripes.png")
    page.set_input_files("#upload", str(tmp_path / "stripes.png"))
    page.wait_for_selector("#score-result[data-anomaly='true']")
    assert "Anomalous" in page.inner_text("#verdict")
    screenshot(page, tmp_path, "web-score-anomaly")
    assert errors.messages == []


def sample_images(page: Page) -> list[str]:
    urls: list[str] = page.eval_on_selector_all(
        "#samples canvas", "(canvases) => canvases.map((c) => c.toDataURL())"
    )
    return urls


def test_temperature_slider_resamples(page: Page, server: str, tmp_path: Path) -> None:
    errors = PageErrors(page)
    open_page(page, server)
    page.click("#tab-samples")
    page.wait_for_selector("#samples[data-renders]")
    assert page.get_attribute("#samples", "data-temperature") == "1"
    before = sample_images(page)
    assert len(before) == 16

    # Keyboard, as a person without a mouse moves it: 1.00 -> 0.70.
    page.focus("#temperature")
    for _ in range(6):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        "() => document.querySelector('#samples').dataset.temperature === "
        "document.querySelector('#temperature').value"
    )
    assert page.input_value("#temperature") == "0.7"
    assert page.inner_text("#temperature-value") == "0.70"
    after = sample_images(page)
    assert len(after) == 16
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= 12  # new samples
    screenshot(page, tmp_path, "web-samples")

    # A sample becomes the input on the Score tab.
    page.click("#samples button >> nth=0")
    page.wait_for_selector("#panel-score:not([hidden]) #score-result[data-score]")
    assert errors.messages == []


def test_latent_walk_starts_at_the_reconstruction(
    page: Page, server: str, digits: Digits, tmp_path: Path
) -> None:
    errors = PageErrors(page)
    images, labels = digits
    write_png(images[int(np.flatnonzero(labels == 0)[0])], tmp_path / "zero.png")
    open_page(page, server)
    page.set_input_files("#upload", str(tmp_path / "zero.png"))
    page.wait_for_selector("#score-result[data-score]")
    reconstruction = np.asarray(canvas_pixels(page, "#reconstruction"))

    page.click("#tab-walk")
    page.wait_for_selector("#walk-strip[data-renders='1']")  # seeds 1 -> 2 on opening
    page.click("#end-a .take-input")
    assert page.is_checked("#end-a input[value='input']")
    page.click("#walk")
    page.wait_for_selector("#walk-strip[data-renders='2']")
    strip = page.locator("#walk-strip canvas")
    assert strip.count() == int(page.input_value("#walk-steps")) == 10
    # t = 0 is decode(mu(x)), which is the mean-path reconstruction of x.
    start = np.asarray(canvas_pixels(page, "#walk-strip figure:first-child canvas"))
    assert np.abs(start - reconstruction).max() <= 1
    first, last = (
        canvas_pixels(page, f"#walk-strip figure:{p}-child canvas") for p in ("first", "last")
    )
    assert first != last
    screenshot(page, tmp_path, "web-walk")
    assert errors.messages == []


def test_model_card_shows_metadata_metrics_and_report_plots(
    page: Page, server: str, repository: Path, tmp_path: Path
) -> None:
    errors = PageErrors(page)
    open_page(page, server)
    page.click("#tab-card")
    plots = sorted(p.name for p in (repository / "digits-vae" / "1" / "report").glob("*.png"))
    assert plots, "the committed bundle has report plots"
    page.wait_for_function(
        "(n) => { const imgs = [...document.querySelectorAll('#card-report img')];"
        " return imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0); }",
        arg=len(plots),
    )
    shown = page.eval_on_selector_all(
        "#card-report img", "(imgs) => imgs.map((i) => i.dataset.file)"
    )
    assert sorted(shown) == plots
    facts = page.inner_text("#card-facts")
    assert "Latent dimensions" in facts
    assert "0 to 16" in facts
    assert "neg_elbo" in page.inner_text("#card-metrics")
    assert "recon_complexity (default)" in page.inner_text("#card-thresholds")
    screenshot(page, tmp_path, "web-card")
    assert errors.messages == []


def test_tabular_model_scores_pasted_rows_and_a_csv(
    page: Page, server: str, tmp_path: Path
) -> None:
    errors = PageErrors(page)
    open_page(page, server)
    page.select_option("#model-select", "cancer-vae")
    page.wait_for_selector("#table-score:not([hidden])")
    assert page.is_hidden("#tab-walk")

    data = load_breast_cancer()
    benign = data.data[data.target == 1][0]
    wild = benign * 50.0
    # Six significant digits, as a person would paste them; the API gets the same numbers.
    rows = [[float(f"{v:.6g}") for v in row] for row in (benign, wild)]
    page.fill("#rows", "\n".join(", ".join(f"{v:g}" for v in row) for row in rows))
    page.click("#score-rows")
    page.wait_for_selector("#row-summary[data-rows='2']")
    with httpx.Client(base_url=server, timeout=10.0) as http:
        api = http.post("/models/cancer-vae/versions/1/anomaly-score", json={"inputs": rows}).json()
    shown = [float(s) for s in page.locator("#row-table .row-score").all_inner_texts()]
    assert shown == pytest.approx(api["scores"], rel=1e-3)  # shown to 4 significant digits
    verdicts = page.locator("#row-table .row-verdict").all_inner_texts()
    assert verdicts == ["anomalous" if a else "normal" for a in api["is_anomaly"]]
    assert verdicts[1] == "anomalous"
    screenshot(page, tmp_path, "web-tabular")

    csv = tmp_path / "records.csv"
    header = ",".join(f"f{j}" for j in range(benign.size))
    csv.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in data.data[:3]) + "\n")
    page.set_input_files("#csv-upload", str(csv))
    page.wait_for_selector("#row-summary[data-rows='3']")
    assert errors.messages == []


def test_with_api_keys_the_page_loads_and_asks_for_a_key(
    browser: Browser, repository: Path, tmp_path: Path
) -> None:
    env = {
        "VAE_API_KEYS": API_KEY,
        "VAE_DEFAULT_MODEL": "digits-vae",
        "VAE_WORKERS": "1",
        "VAE_LOG_LEVEL": "warning",
    }
    with running_server(env, repository) as (base, _):
        assert httpx.get(f"{base}/").status_code == 200  # the page and its files need no key
        assert httpx.get(f"{base}/ui/app.js").status_code == 200
        assert httpx.get(f"{base}/models").status_code == 401

        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            # The refused first call is expected; anything else is not.
            errors = PageErrors(page, allowed=("401",))
            page.goto(f"{base}/")
            page.wait_for_selector("#alert:not([hidden])")
            assert "API key" in page.inner_text("#alert")
            assert page.evaluate("() => document.querySelector('#key-box').open")

            page.fill("#api-key", API_KEY)
            page.press("#api-key", "Enter")
            page.wait_for_selector("#model-select:not([disabled])")
            page.wait_for_selector("#image-score:not([hidden])")
            assert page.evaluate("() => sessionStorage.getItem('vae-service.api-key')") == API_KEY

            # Draw a stroke with the mouse: a vertical line, a "1".
            box = page.locator("#pad").bounding_box()
            assert box is not None
            x = box["x"] + box["width"] / 2
            page.mouse.move(x, box["y"] + box["height"] * 0.2)
            page.mouse.down()
            page.mouse.move(x, box["y"] + box["height"] * 0.8, steps=12)
            page.mouse.up()
            page.wait_for_selector("#score-result[data-score]")
            drawn = canvas_pixels(page, "#model-input")
            assert max(drawn) > 128  # the stroke reached the model's frame
            screenshot(page, tmp_path, "web-keyed-drawing")

            # Report plots come through the key as well.
            page.click("#tab-card")
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('#card-report img')];"
                " return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }"
            )
            assert errors.messages == []
        finally:
            context.close()


MONITOR_ENV = {
    "VAE_DEFAULT_MODEL": "digits-vae",
    "VAE_WORKERS": "1",
    "VAE_LOG_LEVEL": "warning",
    "VAE_MONITOR_WINDOW": "60",
    "VAE_MONITOR_MIN_ITEMS": "30",
    "VAE_MONITOR_REPORT_INTERVAL_S": "0",
}


def tile_states(page: Page) -> dict[str, str]:
    states: dict[str, str] = page.eval_on_selector_all(
        "#monitor-verdicts .verdict-tile",
        "(tiles) => Object.fromEntries(tiles.map((t) => [t.id, t.dataset.state]))",
    )
    return states


def api_states(report: dict[str, Any]) -> dict[str, str]:
    def state(verdict: bool | None) -> str:
        return "none" if verdict is None else "bad" if verdict else "ok"

    rate, score, inputs = report["anomaly_rate_test"], report["score_drift"], report["input_drift"]
    return {
        "verdict-anomaly-rate": state(None if rate is None else rate["alert"]),
        "verdict-score-drift": state(None if score is None else score["drifted"]),
        "verdict-input-drift": state(None if inputs is None else inputs["drifted"]),
    }


def test_monitoring_panel_shows_verdicts_histogram_and_the_moved_feature(
    page: Page, repository: Path, tmp_path: Path
) -> None:
    """The panel follows live traffic on its own (a refresh every 5 s): nothing judged at
    first, then held-out benign rows, then the same rows with one column in other units,
    which the panel names. Each time it shows what GET .../monitoring says."""
    errors = PageErrors(page)
    data = load_breast_cancer()
    benign = data.data[data.target == 1]
    with running_server(MONITOR_ENV, repository) as (base, _):
        page.goto(f"{base}/#model=cancer-vae&version=1&tab=monitor")
        page.wait_for_selector("#verdict-anomaly-rate")
        assert set(tile_states(page).values()) == {"none"}
        assert "verdicts start at 30" in page.inner_text("#monitor-missing")

        def score_and_wait(rows: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
            answer = httpx.post(
                f"{base}/models/cancer-vae/anomaly-score",
                json={"inputs": rows.tolist()},
                timeout=10.0,
            )
            assert answer.status_code == 200, answer.text
            time.sleep(2 * MONITOR_FLUSH_S + 0.1)  # the worker writes what it kept aside
            report: dict[str, Any] = httpx.get(
                f"{base}/models/cancer-vae/monitoring", timeout=10.0
            ).json()
            # No click: the panel's own timer picks the new window up.
            page.wait_for_function(
                "(to) => Number(document.querySelector('#monitor-window').dataset.to) === to",
                arg=report["window"]["to"],
            )
            assert page.inner_text("#monitor-window").startswith(
                f"{report['window']['items']} of the last 60 scored items"
            )
            assert tile_states(page) == api_states(report)
            return report

        calm = score_and_wait(benign[:60])
        assert calm["window"]["items"] == 60
        assert page.locator("#monitor-histogram-svg rect.bin.live").count() > 0
        assert page.locator("#monitor-histogram-svg rect.bin.reference").count() > 0
        label = page.get_attribute("#monitor-histogram-svg", "aria-label")
        assert label is not None
        assert label.startswith("Histogram of neg_elbo scores")

        scaled = benign[60:120].copy()
        scaled[:, 3] *= 3.0  # "mean area" reported in other units
        moved = score_and_wait(scaled)
        assert moved["input_drift"]["drifted"] is True
        assert tile_states(page)["verdict-input-drift"] == "bad"
        assert "mean area" in page.inner_text("#verdict-input-drift")
        first_row = page.locator("#monitor-moved-table tbody tr").first
        assert first_row.inner_text().startswith("mean area (feature 3)")
        assert first_row.get_attribute("class") == "anomalous"
        assert "No labels yet" in page.inner_text("#monitor-feedback")
        screenshot(page, tmp_path, "web-monitoring")

    with running_server({**MONITOR_ENV, "VAE_MONITORING": "false"}, repository) as (base, _):
        page.goto(f"{base}/#model=cancer-vae&version=1&tab=monitor")
        page.wait_for_function(
            "() => document.querySelector('#monitor-window').textContent.includes('off')"
        )
        assert "VAE_MONITORING" in page.inner_text("#monitor-window")
    # The 409 of a service with monitoring off is expected; nothing else may fail.
    assert [m for m in errors.messages if "409" not in m] == []
