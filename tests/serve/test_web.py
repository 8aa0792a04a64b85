"""The web page at `GET /`, driven in headless Chromium against a real server on loopback.

Uses Debian's `chromium` and `chromium-driver` through Selenium, with both paths given, so
Selenium Manager never runs (and never tries to download a browser or a driver). Without them
the browser tests skip; the page's own headers and content are checked either way.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.serve.test_serve import KEY, free_port, serving_process, serving_url
from tests.synthetic import Synthetic

AUTH = {"Authorization": f"Bearer {KEY}"}
WAIT_S = 20
INSTALL_HINT = "apt-get install -y chromium chromium-driver"


@pytest.fixture(scope="module", params=[1, 2], ids=["in-process", "workers-2"])
def base_url(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The page served in this process, and by `warmstart serve --workers 2`, where each of
    the page's requests may reach either worker (it sends back the seq of its last write)."""
    db = tmp_path_factory.mktemp("db") / "web.db"
    if request.param == 1:
        with serving_url(model_dir, db) as url:
            yield url
        return
    port = free_port()
    with serving_process(model_dir, db, port, args=["--workers", "2"]):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            f"headless browser tests need Debian's chromium and chromedriver: {INSTALL_HINT}"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in [
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1200",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ]:
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as env:
        # Belt and braces: a driver path in Service already keeps Selenium Manager from running.
        env.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
        try:
            yield driver
        finally:
            driver.quit()


# ---- helpers ------------------------------------------------------------------------------
def wait_for(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any]) -> Any:
    return WebDriverWait(driver, WAIT_S).until(condition)


def open_page(driver: webdriver.Chrome, base_url: str, key: str = KEY) -> None:
    driver.get(base_url + "/")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)


def fill(driver: webdriver.Chrome, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def results(driver: webdriver.Chrome) -> list[WebElement]:
    """Wait until the results list is shown, and return its entries."""
    wait_for(driver, lambda d: d.find_element(By.ID, "results").is_displayed())
    return driver.find_elements(By.CSS_SELECTOR, "#result-list > li.result")


def error_box(driver: webdriver.Chrome) -> tuple[str, str]:
    """Wait until the error box is shown; return its title and detail."""
    wait_for(driver, lambda d: d.find_element(By.ID, "error").is_displayed())
    return (
        driver.find_element(By.ID, "error-title").text,
        driver.find_element(By.ID, "error-detail").text,
    )


def shown(entries: list[WebElement]) -> list[tuple[str, str]]:
    """(item id, score as shown) per entry."""
    return [
        (
            e.find_element(By.CLASS_NAME, "item-id").text,
            e.find_element(By.CLASS_NAME, "score").text,
        )
        for e in entries
    ]


def expected(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(r["item_id"]), f"score {r['score']:.2f}") for r in body["recommendations"]]


# ---- the page itself (no browser needed) -------------------------------------------------
def test_page_is_public_self_contained_and_locked_down(base_url: str) -> None:
    page = httpx.get(base_url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "script-src 'sha256-" in csp
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched elsewhere
    assert ".innerHTML" not in page.text
    spec = httpx.get(base_url + "/openapi.json", headers=AUTH).json()
    assert "/" not in spec["paths"]


# ---- in the browser ----------------------------------------------------------------------
def test_profile_shows_recommendations_with_explanations(
    browser: webdriver.Chrome, base_url: str, api: httpx.Client, data: Synthetic
) -> None:
    text = data.group_text(0)
    open_page(browser, base_url)
    fill(browser, "profile-text", text)
    fill(browser, "profile-k", "5")
    browser.find_element(By.ID, "recommend-profile").click()
    entries = results(browser)

    body = api.post("/v1/recommendations", json={"text": text, "k": 5}).json()
    assert shown(entries) == expected(body)
    assert data.group_share([i for i, _ in shown(entries)], 0) >= 0.8
    assert f"route: {body['route']}" in browser.find_element(By.ID, "results-meta").text
    summaries = [e.find_element(By.CLASS_NAME, "summary").text for e in entries]
    assert summaries == [r["explanation"]["summary"] for r in body["recommendations"]]
    assert all(summaries)
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_warm_user_shows_recommendations_and_their_neighbours(
    browser: webdriver.Chrome, base_url: str, api: httpx.Client, data: Synthetic
) -> None:
    user = data.warm_users_of(1)[0]
    open_page(browser, base_url)
    fill(browser, "user-id", str(user))
    browser.find_element(By.ID, "recommend-user").click()
    entries = results(browser)

    body = api.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert body["route"] == "warm"
    assert shown(entries) == expected(body)
    assert "route: warm" in browser.find_element(By.ID, "results-meta").text
    assert browser.find_element(By.ID, "results-title").text == f"For user {user}"
    first = body["recommendations"][0]["explanation"]["neighbours"]
    assert first, "a warm user's recommendation should name the items behind it"
    labels = [n.text for n in entries[0].find_elements(By.CLASS_NAME, "neighbour")]
    assert len(labels) == len(first)
    for label, n in zip(labels, first, strict=True):
        assert n["title"] in label and str(n["item_id"]) in label
        assert label.endswith(f"similarity {n['similarity']:.2f}")


def test_new_item_is_confirmed_then_recommended_for_a_matching_profile(
    browser: webdriver.Chrome, base_url: str, data: Synthetic
) -> None:
    text = data.group_text(2, seed=7)
    open_page(browser, base_url)
    fill(browser, "item-id", "web-new-item")
    fill(browser, "item-text", text)
    browser.find_element(By.ID, "post-item").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "item-status").text)
    assert browser.find_element(By.ID, "item-status").text == "Added item web-new-item."

    fill(browser, "profile-text", text)
    browser.find_element(By.ID, "recommend-profile").click()
    entries = results(browser)
    ids = [i for i, _ in shown(entries)]
    assert "web-new-item" in ids[:3], ids
    new = entries[ids.index("web-new-item")]
    assert "new item" in new.find_element(By.CLASS_NAME, "summary").text


def test_wrong_key_shows_the_401_in_the_error_box(
    browser: webdriver.Chrome, base_url: str, data: Synthetic
) -> None:
    open_page(browser, base_url, key="not-the-key")
    fill(browser, "profile-text", data.group_text(1))
    browser.find_element(By.ID, "recommend-profile").click()
    assert error_box(browser) == ("Error 401", "missing or wrong API key")
    assert not browser.find_element(By.ID, "results").is_displayed()

    # The next good request clears the error.
    fill(browser, "api-key", KEY)
    browser.find_element(By.ID, "recommend-profile").click()
    assert results(browser)
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_invalid_item_shows_the_servers_422_detail(
    browser: webdriver.Chrome, base_url: str
) -> None:
    open_page(browser, base_url)
    fill(browser, "item-id", "web-blank-item")
    fill(browser, "item-text", "   ")
    browser.find_element(By.ID, "post-item").click()
    title, detail = error_box(browser)
    assert title == "Error 422"
    assert "an item needs text or attributes" in detail
    assert browser.find_element(By.ID, "item-status").text == ""


def test_unknown_liked_item_shows_the_404(browser: webdriver.Chrome, base_url: str) -> None:
    open_page(browser, base_url)
    fill(browser, "profile-items", "item-001, no-such-item")
    browser.find_element(By.ID, "recommend-profile").click()
    assert error_box(browser) == ("Error 404", "unknown item id 'no-such-item'")


def test_titles_are_shown_the_text_on_a_click_and_stale_results_go_after_an_error(
    browser: webdriver.Chrome, base_url: str, api: httpx.Client, data: Synthetic
) -> None:
    text = data.group_text(1)
    open_page(browser, base_url)
    fill(browser, "profile-text", text)
    browser.find_element(By.ID, "recommend-profile").click()
    entries = results(browser)
    body = api.post("/v1/recommendations", json={"text": text, "k": 10}).json()
    titles = [e.find_element(By.CLASS_NAME, "item-title").text for e in entries]
    assert titles == [r["title"] for r in body["recommendations"]]
    assert all(titles) and titles != [str(r["item_id"]) for r in body["recommendations"]]

    first = body["recommendations"][0]
    entries[0].find_element(By.CLASS_NAME, "item-title").click()
    shown_text = wait_for(
        browser,
        lambda d: (
            (t := entries[0].find_elements(By.CLASS_NAME, "item-text"))
            and t[0].text != "Loading..."
            and t[0].text
        ),
    )
    assert shown_text == api.get(f"/v1/items/{first['item_id']}").json()["text"]
    entries[0].find_element(By.CLASS_NAME, "item-title").click()
    assert not entries[0].find_elements(By.CLASS_NAME, "item-text"), "a second click hides it"

    fill(browser, "profile-items", "no-such-item")
    browser.find_element(By.ID, "recommend-profile").click()
    assert error_box(browser)[0] == "Error 404"
    assert not browser.find_element(By.ID, "results").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#result-list > li")


def test_liked_items_alone_are_a_profile(
    browser: webdriver.Chrome, base_url: str, api: httpx.Client, data: Synthetic
) -> None:
    liked = data.items_of(2, cold=False)[:3]
    open_page(browser, base_url)
    fill(browser, "profile-items", ", ".join(liked))
    browser.find_element(By.ID, "recommend-profile").click()
    entries = results(browser)
    body = api.post("/v1/recommendations", json={"text": "", "item_ids": liked}).json()
    assert shown(entries) == expected(body)
    assert data.group_share([i for i, _ in shown(entries)], 2) >= 0.8


def test_key_stays_in_this_tab_only(browser: webdriver.Chrome, base_url: str) -> None:
    open_page(browser, base_url)
    assert browser.execute_script("return sessionStorage.getItem('warmstart.apiKey')") == KEY
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.execute_script("return document.cookie") == ""
    browser.refresh()
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == KEY
    browser.find_element(By.ID, "forget-key").click()
    assert browser.execute_script("return sessionStorage.getItem('warmstart.apiKey')") is None
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""


def test_data_is_shown_as_text_never_as_markup(
    browser: webdriver.Chrome, base_url: str, api: httpx.Client, data: Synthetic
) -> None:
    hostile = '<img id="pwned" src="x" onerror="document.title=\'pwned\'">'
    text = data.group_text(1, seed=11)
    assert api.post("/v1/items", json={"items": [{"item_id": hostile, "text": text}]}).is_success
    open_page(browser, base_url)
    fill(browser, "profile-text", text)
    browser.find_element(By.ID, "recommend-profile").click()
    ids = [i for i, _ in shown(results(browser))]
    assert hostile in ids
    assert browser.find_elements(By.ID, "pwned") == []
    assert browser.title == "warmstart"
