"""The landing page in a real headless Chromium (Debian's `chromium`), driven over the DevTools protocol.

The browser loads the page from the gunicorn-served relay; the test records every
console message, uncaught exception, log entry (failed loads, CSP violations) and
network request, and reads what the page shows.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools protocol's WebSocket."""

    def __init__(self, profile: Path):
        assert CHROMIUM, "chromium is not installed (scripts/test.sh installs it with apt-get)"
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        for _ in range(10_000):
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                assert "error" not in message, message["error"]
                return message["result"]
            self.events.append(message)
        raise RuntimeError(f"no answer to {method}")

    def wait_for(self, method: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        raise AssertionError(f"{method} did not happen within {timeout}s")

    def settle(self, seconds: float) -> None:
        """Collect events for a while (late console messages, delayed requests)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def load(self, url: str) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.settle(0.5)

    def problems(self) -> list[dict]:
        """Everything a person would see in the DevTools console, plus failed or refused loads."""
        noisy = {"Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded", "Network.loadingFailed"}
        return [event for event in self.events if event.get("method") in noisy]

    def requests_made(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def browser(tmp_path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "profile")
    yield browser
    browser.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_page_loads_cleanly_and_shows_the_address_the_browser_used(browser, relay, host):
    address = f"http://{host}:{relay.port}"
    browser.load(address + "/")
    assert browser.problems() == []
    # One request, the page itself: no favicon, script, font or stylesheet is fetched from anywhere.
    assert browser.requests_made() == [address + "/"]
    assert browser.evaluate("document.getElementById('status').textContent").startswith("The relay is up")
    assert browser.evaluate("location.origin") == address
    assert browser.evaluate("document.getElementById('openai-base-url').textContent") == address + "/v1"
    assert browser.evaluate("document.getElementById('base-url').textContent") == address
    shown_routes = browser.evaluate("[...document.querySelectorAll('td:first-child code')].map(c => c.textContent)")
    prefixes = requests.get(relay.url + "/healthz", timeout=10).json()["routes"]
    assert shown_routes == [prefix + "/..." for prefix in prefixes]


def test_copy_button_copies_the_base_url(browser, relay):
    browser.load(relay.url + "/")
    browser.call("Browser.grantPermissions", origin=relay.url,
                 permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    browser.call("Emulation.setFocusEmulationEnabled", enabled=True)  # the clipboard wants a focused page
    button = "document.querySelector('button[data-copy-target=openai-base-url]')"
    browser.evaluate(f"{button}.click()")
    browser.settle(0.5)
    assert browser.evaluate(f"{button}.textContent") == "Copied"
    assert browser.evaluate("navigator.clipboard.readText()") == relay.url + "/v1"
    assert browser.problems() == []


STATUS = {"en": "The relay is up", "zh": "中转服务运行中"}
COPIED = {"en": "Copied", "zh": "已复制"}


@pytest.mark.parametrize(("accept_language", "lang", "other"), [("en-US,en;q=0.9", "en", "zh"),
                                                                 ("zh-CN,zh;q=0.9,en;q=0.8", "zh", "en")])
def test_page_speaks_the_browsers_language_and_its_switch_changes_it(browser, relay, accept_language, lang, other):
    browser.call("Network.enable")
    browser.call("Network.setExtraHTTPHeaders", headers={"Accept-Language": accept_language})
    browser.load(relay.url + "/")
    assert browser.problems() == []
    assert browser.requests_made() == [relay.url + "/"]
    assert browser.evaluate("document.documentElement.lang") == {"en": "en", "zh": "zh-CN"}[lang]
    assert browser.evaluate("document.getElementById('status').textContent").startswith(STATUS[lang])
    current = browser.evaluate("document.querySelector('#languages a[aria-current]').getAttribute('href')")
    assert current == f"?lang={lang}"
    # The visible switch: following the other link shows the page in the other language, the same facts.
    browser.events.clear()
    browser.evaluate(f"document.querySelector('#languages a[href=\"?lang={other}\"]').click()")
    browser.wait_for("Page.loadEventFired")
    browser.settle(0.5)
    assert browser.evaluate("location.href") == f"{relay.url}/?lang={other}"
    assert browser.evaluate("document.getElementById('status').textContent").startswith(STATUS[other])
    assert browser.evaluate("document.getElementById('openai-base-url').textContent") == relay.url + "/v1"
    # The copy button speaks it too.
    browser.call("Browser.grantPermissions", origin=relay.url,
                 permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    browser.call("Emulation.setFocusEmulationEnabled", enabled=True)
    button = "document.querySelector('button[data-copy-target=openai-base-url]')"
    browser.evaluate(f"{button}.click()")
    browser.settle(0.5)
    assert browser.evaluate(f"{button}.textContent") == COPIED[other]
    assert browser.problems() == []
