"""The web page after a profile search, as a PNG for the docs: a real `warmstart serve` on a
fitted model, driven in headless Chromium (Debian's chromium and chromium-driver, through
Selenium, as tests/serve/test_web.py does).

    .venv/bin/warmstart fit --dataset ml-100k --output /tmp/ml100k
    .venv/bin/python docs/screenshot.py --model /tmp/ml100k --text "a funny animated film for kids"
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

KEY = "screenshot-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a fitted warmstart model")
    parser.add_argument("--text", default="a funny animated film for kids")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--click", type=int, default=1, help="show the text of this many results")
    parser.add_argument("--output", type=Path, default=Path("docs/page-profile.png"))
    args = parser.parse_args()
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        sys.exit(
            "needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WARMSTART_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "warmstart.cli.main", "serve", "--model", str(args.model)]
        cmd += ["--db", f"sqlite:///{tmp}/page.db", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.2)
            options = webdriver.ChromeOptions()
            options.binary_location = chromium
            for arg in [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1100,1500",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp}/chromium",
            ]:
                options.add_argument(arg)
            browser = webdriver.Chrome(
                options=options, service=Service(executable_path=driver_path)
            )
            try:
                browser.get(f"http://127.0.0.1:{port}/")
                browser.find_element(By.ID, "api-key").send_keys(KEY)
                browser.find_element(By.ID, "profile-text").send_keys(args.text)
                k = browser.find_element(By.ID, "profile-k")
                k.clear()
                k.send_keys(str(args.k))
                browser.find_element(By.ID, "recommend-profile").click()
                wait = WebDriverWait(browser, 60)
                wait.until(lambda d: d.find_element(By.ID, "results").is_displayed())
                entries = browser.find_elements(By.CSS_SELECTOR, "#result-list > li.result")
                for entry in entries[: args.click]:
                    entry.find_element(By.CLASS_NAME, "item-title").click()
                    wait.until(
                        lambda d, e=entry: (
                            (t := e.find_elements(By.CLASS_NAME, "item-text"))
                            and t[0].text != "Loading..."
                        )
                    )
                browser.find_element(By.ID, "results").location_once_scrolled_into_view  # noqa: B018
                args.output.parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(args.output))
                print(f"wrote {args.output}")
            finally:
                browser.quit()
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
