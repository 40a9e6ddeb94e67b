"""A live stack for browser tests: the ASGI app under a real uvicorn server (HTTP and
WebSocket) on the test database, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from testkit.services import REPO, AsgiServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOTS = REPO / "var" / "screenshots"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def live_url(worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A uvicorn server of the ASGI app on this test database; yields its http:// base."""
    if not (REPO / "node_modules" / "htmx.org" / "dist" / "htmx.min.js").is_file():
        raise AssertionError("node_modules is missing: run `npm ci` (make test does)")
    # Without the test process's async-unsafe flag (see ``chromium``).
    env = {k: v for k, v in worker_env.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["DJANGO_SETTINGS_MODULE"] = os.environ["DJANGO_SETTINGS_MODULE"]
    web = AsgiServer(env=env, log_path=tmp_path / "uvicorn.log")
    web.start(timeout=30)
    try:
        yield web.http
    finally:
        web.stop()


@pytest.fixture
def chromium(live_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Debian's Chromium, headless (never a downloaded browser build).

    Playwright's sync API keeps an event loop running in this thread, and Django refuses
    ORM calls where a loop runs; the test's own ORM calls (setting up users, checking
    rows) are allowed here. The server and workers were started without that flag."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        # ORM calls made while Playwright's loop ran used a connection of their own.
        connections.close_all()
        browser.close()


@dataclass
class Tab:
    """A signed-in browser page that records every console error and page error."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        size = self.page.viewport_size
        self.page.screenshot(
            path=str(SCREENSHOTS / f"{name}-{size['width']}x{size['height']}.png"), full_page=True
        )


@pytest.fixture
def open_tab(chromium: Any, live_url: str) -> Iterator[Callable[..., Tab]]:
    """Factory: ``open_tab(context=None, enforce_csp=False)`` opens a page (in a new
    browser context unless one is given) that collects console errors; contexts close at
    teardown."""
    contexts: list[Any] = []

    def open_tab(context: Any = None, enforce_csp: bool = False) -> Tab:
        if context is None:
            # Playwright's string predicates (wait_for_function) are evaluated with eval,
            # which the pages' Content-Security-Policy forbids; tests that check the
            # policy itself open their tab with enforce_csp=True.
            context = chromium.new_context(viewport=LAPTOP, bypass_csp=not enforce_csp)
            contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        tab = Tab(page, live_url)
        page.on(
            "console",
            lambda message: (
                tab.errors.append(f"console: {message.text} @ {message.location}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
        return tab

    yield open_tab
    for context in contexts:
        context.close()


def sign_in(tab: Tab, username: str, password: str) -> None:
    tab.go("/login/")
    tab.page.get_by_label("Username").fill(username)
    tab.page.get_by_label("Password").fill(password)
    tab.page.get_by_role("button", name="Sign in").click()
    tab.page.wait_for_url(tab.base + "/")
