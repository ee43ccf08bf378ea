"""`e4e ui` in a real browser: Debian's headless Chromium (driven by Selenium through its chromedriver, nothing
downloaded) loads the page served on 127.0.0.1 with the kit's 256 px e4e, uploads the kit's photo, moves a slider,
and sees the preview change and the command box write the batch command."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from conftest import KIT

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver); not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(case_checkpoint, tmp_path, monkeypatch):
    """The page for the kit's e4e_256 on 127.0.0.1:<free port>, previews at 64 px; its temporary folder."""
    pytest.importorskip("gradio", reason="the page needs gradio (pip install 'e4ecli[ui]')")
    pytest.importorskip("selenium", reason="the browser test drives Chromium with selenium (in the test extra)")
    pytest.importorskip("dlib", reason="photos are aligned with dlib here")
    import torch

    from e4ecli.hub.checkpoints import file_id, load_checkpoint
    from e4ecli.ui.app import configure_gradio, serve
    from e4ecli.ui.session import Session

    ck = case_checkpoint("e4e_256")
    monkeypatch.setenv("E4E_DIRECTIONS", str(KIT / "directions"))
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED", "GRADIO_SSR_MODE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)  # restored after the test (configure_gradio sets them)
    configure_gradio(tmp_path / "gradio")
    session = Session(load_checkpoint(ck), f"{ck.name}:{file_id(ck)}", str(ck), torch.device("cpu"), tmp_path / "session",
                      detector="dlib", preview_size=64)
    port = free_port()
    demo = serve(session, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", session
    demo.close()
    session.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_a_photo_move_a_slider_and_read_the_command(served, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, session = served
    wait = WebDriverWait(browser, 180)
    browser.get(url)

    def command() -> str:
        return browser.find_element(By.CSS_SELECTOR, "#command textarea").get_attribute("value")

    def preview_src() -> str | None:
        found = browser.find_elements(By.CSS_SELECTOR, "#preview img")
        return found[0].get_attribute("src") if found else None

    def status() -> str:  # the Markdown's text (without gradio's "processing" overlay)
        return "".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "#status .prose"))

    start = time.perf_counter()
    upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
    assert browser.title == "e4e ui"
    upload.send_keys(str(KIT / "photos" / "face.jpg"))
    wait.until(lambda b: "face.jpg" in command() or "⚠" in status())
    wait.until(lambda b: preview_src() is not None)
    assert status() == "" and command().startswith(f"e4e invert face.jpg -o latents/ --checkpoint {session.checkpoint} --align")
    before = preview_src()
    assert browser.find_elements(By.CSS_SELECTOR, "#crop img") and browser.find_elements(By.CSS_SELECTOR, "#recon img")

    age = browser.find_element(By.CSS_SELECTOR, "#dir-0 input[type=range]")  # the first slider: age, -3 to 3
    ActionChains(browser).click_and_hold(age).move_by_offset(age.size["width"] // 4, 0).release().perform()
    wait.until(lambda b: "-d age -s" in command() and preview_src() not in (None, before))
    edit = command().splitlines()[-1]
    strength = float(edit.rsplit("-s ", 1)[1])
    assert edit.startswith("e4e edit latents/face.npy -o edited/") and 0.5 < strength <= 3
    assert float(browser.find_element(By.CSS_SELECTOR, "#dir-0 input[type=number]").get_attribute("value")) == strength
    assert status() == ""
    print(f"upload to moved preview: {time.perf_counter() - start:.1f} s")
