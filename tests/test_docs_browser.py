"""Swagger UI and ReDoc, opened in a real headless Chromium: they render the API, and every request
the page makes goes to the server itself (no CDN, no web fonts, no remote logo: ReDoc runs the
sidecar's bundle with its logo address emptied, billing/templates/billing/redoc.html).

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them). The browser's own requests
are read from the DevTools protocol's network events (chromedriver's performance log).
"""

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Data the page holds itself (inline images, generated scripts): no host is asked.
LOCAL_SCHEMES = {"data", "blob", "about"}


@pytest.fixture(scope="module")
def browser():
    for program in (CHROMIUM, CHROMEDRIVER):
        assert Path(program).is_file(), "apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    # No requests of the browser's own (updates, safe browsing, suggestions) in the log.
    options.add_argument("--disable-background-networking")
    options.add_argument("--disable-component-update")
    options.add_argument("--no-first-run")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the log was last read."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def open_page(driver, url: str, rendered_selector: str) -> list[str]:
    driver.get_log("performance")  # what earlier pages asked for
    driver.get(url)
    WebDriverWait(driver, 20).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, rendered_selector))
    )
    return requested_urls(driver)


def assert_all_on(urls: list[str], live_server_url: str) -> None:
    server = urlsplit(live_server_url).netloc
    elsewhere = [
        url for url in urls if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).netloc != server
    ]
    assert not elsewhere, elsewhere


@pytest.mark.django_db(transaction=True)
def test_swagger_ui_renders_the_operations_from_the_server_alone(browser, live_server):
    urls = open_page(browser, f"{live_server.url}/api/docs/", ".opblock")

    assert_all_on(urls, live_server.url)
    assert any(urlsplit(url).path == "/api/schema/" for url in urls)
    operations = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/invoices/", "/api/payments/", "/api/invoices/{id}/send/"} <= operations
    assert browser.find_elements(By.CSS_SELECTOR, ".btn.authorize")


@pytest.mark.django_db(transaction=True)
def test_redoc_renders_the_api_from_the_server_alone(browser, live_server):
    urls = open_page(browser, f"{live_server.url}/api/redoc/", "[data-section-id^='tag/invoices']")

    assert_all_on(urls, live_server.url)
    assert any(urlsplit(url).path == "/api/schema/" for url in urls)
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Billing API" in text
    assert "Send a draft (draft → sent)" in text
    assert "API docs by Redocly" in text  # the attribution stays; only its remote logo is gone
    assert not browser.find_elements(By.CSS_SELECTOR, "img[src*='redoc.ly']")
