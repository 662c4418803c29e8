"""The pages in a real headless Chromium (Selenium + chromium-driver) against a real server.

Screenshots go to ``$PYINSTANCE_ARTIFACTS/serve`` (else the test's tmp folder).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyinstance.index import InstanceIndex

from .conftest import TOKEN, running_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("PYINSTANCE_ARTIFACTS")
    folder = Path(root) / "serve" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def server(index_copy: Path, tmp_path: Path) -> Iterator[str]:
    with running_server(index_copy, tmp_path) as (url, _):
        yield url


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_visitor_page_identifies_an_uploaded_photo(
    server: str, browser, pairs: Path, artifacts: Path
) -> None:
    browser.get(server + "/")
    browser.find_element(By.ID, "photo").send_keys(str(pairs / "query" / "graf3.png"))
    wait = patient(browser)
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "answer")))
    assert browser.find_element(By.ID, "title").text == "graf"
    assert browser.find_element(By.ID, "confidence").text.endswith("%")
    wait.until(
        lambda b: b.execute_script("return document.getElementById('reference').naturalWidth") > 0
    )
    browser.save_screenshot(str(artifacts / "visitor.png"))


def test_curator_page_adds_tests_and_removes_an_instance(
    server: str, browser, pairs: Path, artifacts: Path
) -> None:
    wait = curator(browser, server)
    browser.find_element(By.ID, "instance").send_keys("whale-two")
    browser.find_element(By.ID, "addfiles").send_keys(str(pairs / "query" / "rubberwhale2.png"))
    browser.find_element(By.ID, "add").click()
    tile = (By.CSS_SELECTOR, '.tile[data-instance="whale-two"]')
    wait.until(expected_conditions.presence_of_element_located(tile))
    assert "Added 1 photo" in browser.find_element(By.ID, "log").text

    browser.find_element(By.ID, "testfile").send_keys(str(pairs / "reference" / "rubberwhale1.png"))
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#matches li")) == 5)
    matches = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#matches li")]
    assert {m.split(" — ")[0] for m in matches[:2]} == {"rubberwhale", "whale-two"}
    wait.until(
        lambda b: b.execute_script("return document.getElementById('heatmap').naturalWidth") > 0
    )
    browser.save_screenshot(str(artifacts / "curator-added.png"))
    browser.execute_script("document.getElementById('heatbox').scrollIntoView()")
    browser.save_screenshot(str(artifacts / "curator-heatmap.png"))

    settled(browser, server, wait)
    browser.find_element(*tile).find_element(By.CSS_SELECTOR, "button.remove").click()
    wait.until(expected_conditions.alert_is_present()).accept()
    wait.until(expected_conditions.invisibility_of_element_located(tile))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".tile")) == 9
    assert "Removed whale-two" in browser.find_element(By.ID, "log").text
    browser.save_screenshot(str(artifacts / "curator-removed.png"))


def test_review_queue_photo_added_in_one_click(
    index_copy: Path, tmp_path: Path, browser, pairs: Path, artifacts: Path
) -> None:
    wait = patient(browser)
    options = ("--review-days", "1", "--review-below", "0.95")
    with running_server(index_copy, tmp_path, *options) as (url, _):
        browser.get(url + "/")
        browser.find_element(By.ID, "photo").send_keys(str(pairs / "query" / "aero3.jpg"))
        wait.until(expected_conditions.visibility_of_element_located((By.ID, "answer")))
        browser.get(url + "/curator")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "loadreview").click()
        row = (By.CSS_SELECTOR, ".review")
        wait.until(expected_conditions.presence_of_element_located(row))
        assert (
            browser.find_element(By.CSS_SELECTOR, ".review .target").get_attribute("value")
            == "aero"
        )
        wait.until(
            lambda b: (
                b.execute_script("return document.querySelector('.review img').naturalWidth") > 0
            )
        )
        browser.save_screenshot(str(artifacts / "curator-review.png"))
        browser.find_element(By.CSS_SELECTOR, ".review button.add").click()
        wait.until(expected_conditions.invisibility_of_element_located(row))
        assert "Added to aero" in browser.find_element(By.ID, "reviewlog").text
        aero = (By.CSS_SELECTOR, '.tile[data-instance="aero"]')
        wait.until(lambda b: "(2)" in b.find_element(*aero).text)


def test_curator_page_shows_another_process_changes_without_reload(
    server: str, browser, index_copy: Path, artifacts: Path
) -> None:
    wait = patient(browser)
    browser.get(server + "/curator")
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".tile")) == 9)
    browser.execute_script("window.notReloaded = true")
    with InstanceIndex.open(index_copy) as other:  # this test's process, not the server's
        other.remove(instance="box")
        other.set_metadata({"graf": {"title": "Graffiti", "author": "Anonymous"}})
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".tile")) == 8)
    graf = (By.CSS_SELECTOR, '.tile[data-instance="graf"] .meta')
    wait.until(lambda b: [e.text for e in b.find_elements(*graf)] == ["Graffiti · Anonymous"])
    assert browser.execute_script("return window.notReloaded") is True
    browser.save_screenshot(str(artifacts / "curator-refreshed.png"))


def patient(browser) -> WebDriverWait:
    """A wait that retries when the page re-drew an element under it (the curator page
    re-renders its grid on each new revision, every 2 s poll)."""
    return WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))


def curator(browser, server: str) -> WebDriverWait:
    """The curator page, its 9 instances shown and the token entered."""
    wait = patient(browser)
    browser.get(server + "/curator")
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".tile")) == 9)
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    return wait


def settled(browser, server: str, wait: WebDriverWait) -> None:
    """Wait until the curator page's grid shows the service's latest revision (its 2 s
    poll would otherwise re-draw the tiles under the test's clicks)."""
    revision = str(httpx.get(server + "/healthz").json()["revision"])
    wait.until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-revision") == revision
    )


def drop_file(browser, zone: str, path: Path) -> None:
    """Drag-and-drop ``path`` onto the element ``zone`` as the browser does it."""
    browser.execute_script(
        """
        const [zone, name, encoded] = arguments;
        const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], name, { type: "image/png" }));
        const target = document.getElementById(zone);
        for (const kind of ["dragover", "drop"]) {
          target.dispatchEvent(new DragEvent(kind, { dataTransfer: files, bubbles: true }));
        }
        """,
        zone,
        path.name,
        base64.b64encode(path.read_bytes()).decode(),
    )


def test_metadata_set_on_the_curator_page_shows_to_visitors(
    server: str, browser, pairs: Path, artifacts: Path
) -> None:
    wait = curator(browser, server)
    browser.find_element(By.ID, "instance").send_keys("whale-two")
    browser.find_element(By.ID, "title").send_keys("Rubber whale")
    browser.find_element(By.ID, "author").send_keys("A toy maker")
    drop_file(browser, "adddrop", pairs / "query" / "rubberwhale2.png")
    assert browser.find_element(By.ID, "log").text == "1 photo(s) ready"
    browser.find_element(By.ID, "add").click()
    meta = (By.CSS_SELECTOR, '.tile[data-instance="whale-two"] .meta')
    wait.until(lambda b: b.find_element(*meta).text == "Rubber whale · A toy maker")
    settled(browser, server, wait)

    tile = browser.find_element(By.CSS_SELECTOR, '.tile[data-instance="graf"]')
    tile.find_element(By.CSS_SELECTOR, "button.edit").click()
    tile.find_element(By.CSS_SELECTOR, ".edit-title").send_keys("Graffiti")
    tile.find_element(By.CSS_SELECTOR, "button.save").click()
    graf = (By.CSS_SELECTOR, '.tile[data-instance="graf"] .meta')
    wait.until(lambda b: b.find_element(*graf).text == "Graffiti")
    browser.save_screenshot(str(artifacts / "curator-metadata.png"))

    browser.get(server + "/")
    browser.find_element(By.ID, "photo").send_keys(str(pairs / "query" / "graf3.png"))
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "answer")))
    assert browser.find_element(By.ID, "title").text == "Graffiti"
    browser.save_screenshot(str(artifacts / "visitor-metadata.png"))
