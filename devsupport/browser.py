"""A real browser for the tests that look at pages as a person does: Debian's chromium,
headless, driven through its chromedriver by selenium.

Both come from Debian (scripts/machine-setup.sh installs chromium and chromium-driver), at
the same version, so selenium is never left to fetch a driver or a browser of its own (the
machines here reach no download site). A missing one fails the test: nothing here skips.

Each test keeps what it saw: `artifacts_dir` gives it a folder of its own under
`<repo>/test-artifacts/` (ignored by git, kept after the run for people and CI to look at),
and `Browser.screenshot` numbers the pictures in the order they were taken.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from devsupport import REPO

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The page's size (the viewport, so every screenshot's), one for all, so that pictures
#: of two runs compare.
WINDOW = (1280, 900)
ARTIFACTS = REPO / "test-artifacts"


def artifacts_dir(test_name: str) -> Path:
    """`<repo>/test-artifacts/<test_name>/`, emptied and created: what one test saw, and
    only what its last run saw."""
    if not test_name or "/" in test_name or test_name in {".", ".."}:
        raise ValueError(f"not a folder name for a test's artifacts: {test_name!r}")
    folder = ARTIFACTS / test_name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Browser:
    """One headless chromium window, with what the tests do with it. `driver` is selenium's
    WebDriver for anything else."""

    def __init__(self, driver: webdriver.Chrome, artifacts: Path) -> None:
        self.driver = driver
        self.artifacts = artifacts
        self._shots = 0

    @property
    def url(self) -> str:
        """The address of the page shown now (after any redirect)."""
        return self.driver.current_url

    def open(self, url: str) -> None:
        """Go to `url` and wait for its page to load."""
        log.info("browser: opening %s", url)
        self.driver.get(url)

    def wait_for(self, selector: str, timeout: float = 30) -> WebElement:
        """The first element that `selector` (CSS) matches, once it is shown. A page that
        does not show it in `timeout` seconds is kept as a screenshot, and its address and
        text are in the error."""
        try:
            element: WebElement = WebDriverWait(self.driver, timeout).until(
                expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, selector))
            )
        except TimeoutException:
            shot = self.screenshot("timeout")
            raise TimeoutError(
                f"{self.url} did not show {selector!r} in {timeout:g} s (see {shot}); "
                f"its text:\n{self.text()[:2000]}"
            ) from None
        return element

    def fill(self, selector: str, value: str) -> None:
        """Type `value` into the field `selector` names, as a person would, after clearing it."""
        field = self.wait_for(selector)
        field.clear()
        field.send_keys(value)

    def click(self, selector: str) -> None:
        """Click the element, scrolled into the window first, as a person scrolls to a
        button below the fold."""
        self.show(selector).click()

    def show(self, selector: str) -> WebElement:
        """Scroll the element `selector` names to the top of the window (for a screenshot
        of it, or a click)."""
        element = self.wait_for(selector)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
        return element

    def text(self, selector: str = "body") -> str:
        """The text a person reads in the element `selector` names (the whole page by
        default): what is shown, as laid out, without markup."""
        return self.driver.find_element(By.CSS_SELECTOR, selector).text

    def script(self, code: str, *args: object) -> object:
        """Run `code` in the page as an asynchronous script: it calls its last argument
        with the answer."""
        return self.driver.execute_async_script(code, *args)

    def reload(self) -> None:
        """Load the page shown now again, as the browser's reload button does."""
        log.info("browser: reloading %s", self.url)
        self.driver.refresh()

    def accept_dialog(self, timeout: float = 10) -> str:
        """Press OK in the page's `confirm()` (or `alert()`) dialog; its text."""
        alert = WebDriverWait(self.driver, timeout).until(expected_conditions.alert_is_present())
        text = alert.text
        alert.accept()
        return text

    def allow_clipboard(self) -> None:
        """Let the page shown now (its origin) read and write the clipboard, as a person
        allows it when the browser asks."""
        origin = "/".join(self.url.split("/")[:3])
        self.driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )

    def clipboard(self) -> str:
        """What the clipboard holds, read in the page (`allow_clipboard` first)."""
        text = self.script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, (e) => done('error: ' + e));"
        )
        return str(text)

    def screenshot(self, name: str) -> Path:
        """Save the window as `artifacts/NN-name.png`, NN counting this browser's
        screenshots from 01, and return its path."""
        if not name or "/" in name:
            raise ValueError(f"not a screenshot name: {name!r}")
        self._shots += 1
        path = self.artifacts / f"{self._shots:02d}-{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"chromium could not save a screenshot of {self.url}")
        log.info("browser: %s is %s", path.name, self.url)
        return path


@contextmanager
def browser(artifacts: Path) -> Iterator[Browser]:
    """Headless chromium (Debian's) driven by its chromedriver, saving into `artifacts`
    (its screenshots, and chromedriver's log); closed after the block."""
    for needed, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not needed.exists():
            raise RuntimeError(
                f"{needed} is missing: install Debian's {package} (scripts/machine-setup.sh)"
            )
    artifacts.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No sandbox: the tests run as root, where chromium's sandbox refuses to start. The
    # shared memory of containers is small, so chromium keeps its own in /tmp.
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    service = Service(str(CHROMEDRIVER), log_output=str(artifacts / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        # The window's size holds chromium's own bars too: the page gets exactly WINDOW.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_page_load_timeout(60)
        yield Browser(driver, artifacts)
    finally:
        driver.quit()
