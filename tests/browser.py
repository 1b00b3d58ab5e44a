"""The web console in a real headless browser: Debian's Chromium driven by Playwright for
Python through `executable_path` (Playwright's own browser downloads are never used).

`Console` is one browser tab on the console at an API's URL. It records every console
message and uncaught page error, so a test states which (if any) it expected; `shoot`
saves a screenshot of the page under docs/console/. Without Chromium the tests skip
loudly, and fail under CI (`./run setup` installs Debian's `chromium`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import tool_missing

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    tool_missing("Chromium is not installed: run `./run setup` as root (Debian package `chromium`)")
    raise AssertionError("unreachable")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium for a test session (Playwright's Browser)."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        tool_missing("Playwright for Python is not installed: `pip install -e '.[dev]'`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """One tab on the console served at `url`, signed out until `sign_in`."""

    def __init__(self, browser: Any, url: str, viewport: dict[str, int] = WIDE) -> None:
        self.url = url
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.messages: list[tuple[str, str]] = []
        self.page.on("console", lambda m: self.messages.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e))))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, route: str = "#/rules", ready: str | None = None) -> None:
        """Go to a page of the console (`#/logs?...`) and wait until it has rendered (again,
        if the tab is on it already: a fresh load)."""
        target = f"{self.url}/{route}"
        if self.page.url == target:
            self.page.reload()
        else:
            self.page.goto(target)
        self.wait_ready(ready or route.lstrip("#/").split("?")[0].split("/")[0])

    def wait_ready(self, name: str) -> None:
        self.page.wait_for_selector(f"main[data-ready='{name}']")

    def sign_in(self, token: str, store: str | None = None) -> None:
        self.page.goto(f"{self.url}/#/signin")
        self.wait_ready("signin")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_label("Store id").fill(store or "")
        self.page.get_by_role("button", name="Sign in").click()
        self.wait_ready("rules")

    def condition(self, path: str, field: str, operator: str, value: str | list[str] | None = None) -> None:
        """Set the rule editor's condition at `path` (`conditions.conditions[1].conditions[0]`):
        a value typed, or chosen (by value or label) where the field offers a list."""
        row = self.page.locator(f".cond[data-cond='{path}']")
        row.get_by_label("Field").select_option(field)
        row.get_by_label("Operator").select_option(operator)
        if value is None:
            return
        box = row.locator(f"[data-path='{path}.value']")
        if box.evaluate("e => e.tagName") == "SELECT":
            box.select_option(value)
        else:
            box.fill(value if isinstance(value, str) else ", ".join(value))

    def errors(self) -> list[tuple[str, str]]:
        """Console errors and warnings, and uncaught exceptions, so far."""
        return [(kind, text) for kind, text in self.messages if kind in ("error", "warning", "pageerror")]

    def assert_clean(self, expected_http: tuple[int, ...] = ()) -> None:
        """No console error, warning or uncaught exception — except the browser's report of
        the HTTP statuses the test provoked on purpose (a 422 for an invalid rule)."""
        unexpected = [(k, t) for k, t in self.errors()
                      if not any(f"status of {code} " in t for code in expected_http)]
        assert unexpected == [], unexpected

    def shoot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path
