"""The web page of ``medgspo serve`` in headless Chromium: type a question, press 提问, read the streamed answer.

Needs Chromium, its driver and selenium (skipped otherwise):
``apt-get install -y chromium chromium-driver`` and ``pip install selenium``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_chat import ANSWER, QUESTION, THINKING, memorized_adapter

from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Chromium or chromedriver not found (apt-get install chromium chromium-driver)",
)
MODEL_ID = "medgspo-web"
LIMIT = 16


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    adapter = memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")
    engine = ChatEngine.load(str(tiny_model_dir), adapter)
    with BackgroundServer(create_app(engine, ServerConfig(MODEL_ID, max_tokens_limit=LIMIT))) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += ["--no-first-run", "--disable-extensions"]
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def open_page(driver, url: str):
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "model-id").text == MODEL_ID)
    return lambda element_id: driver.find_element(By.ID, element_id)


def ask(driver, element, question: str) -> str:
    """Type the question, press 提问 and return the final state of the result section."""
    element("question").clear()
    element("question").send_keys(question)
    element("ask").click()

    def finished(_driver) -> str | bool:
        state = element("result").get_attribute("data-state")
        return state not in ("idle", "streaming") and state

    return wait_for(driver, finished)


def test_question_gets_streamed_answer_with_collapsible_reasoning(browser, server):
    element = open_page(browser, server.url)
    assert element("ask").text == "提问"
    assert ask(browser, element, QUESTION) == "done"
    assert element("answer").text == ANSWER
    box = element("reasoning-box")
    assert box.tag_name == "details" and box.get_attribute("open") is None  # folded once the answer started
    assert element("reasoning").get_attribute("textContent") == THINKING
    assert "完成" in element("status").text and "13 tokens" in element("status").text
    box.find_element("tag name", "summary").click()
    assert element("reasoning").text == THINKING  # unfolded, the reasoning is visible


def test_server_errors_are_shown(browser, server):
    element = open_page(browser, server.url)
    element("settings").find_element("tag name", "summary").click()
    element("max-tokens").send_keys(str(LIMIT + 100))
    assert ask(browser, element, QUESTION) == "error"
    assert f"max_tokens must be <= {LIMIT}" in element("status").text
    assert element("answer").text == ""
