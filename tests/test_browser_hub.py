"""The harness of the hub's browser tests: a real JupyterHub (devsupport.hub) and a real
browser (devsupport.browser, Debian's chromium, headless) that a person's steps drive.

Alice logs in through the hub's login form in chromium and lands on her home page; bob gets
an API token as a user does (devsupport.hub.Hub.token), and the hub's API knows him by it.
No server is spawned. The screenshots stay in test-artifacts/test_browser_hub/.

Nothing here skips: chromium, chromedriver, node and npm must be there.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

from devsupport.browser import artifacts_dir, browser
from devsupport.hub import running_hub


def test_alice_logs_in_in_the_browser_and_bobs_token_is_bobs(tmp_path: Path) -> None:
    artifacts = artifacts_dir("test_browser_hub")
    with (
        running_hub(tmp_path / "hub", {"users": ["alice", "bob"]}) as hub,
        browser(artifacts) as page,
    ):
        # The login page, as a person opening the hub is sent to it.
        page.open(hub.url + "/hub/login?" + urllib.parse.urlencode({"next": "/hub/home"}))
        page.wait_for("#username_input")
        page.screenshot("login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", hub.password)
        page.screenshot("login-filled")
        page.click("#login_submit")

        # Her home page: her server's button, her name in the bar.
        page.wait_for("#start")
        page.screenshot("home")
        assert urllib.parse.urlparse(page.url).path == "/hub/home"
        assert page.text("#login_widget").split()[0] == "alice"
        assert "bob" not in page.text()

        # Bob's token is his on the hub's API.
        token = hub.token("bob")
        request = urllib.request.Request(
            hub.url + "/hub/api/user", headers={"Authorization": f"token {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["name"] == "bob"
    assert sorted(p.name for p in artifacts.glob("*.png")) == [
        "01-login.png",
        "02-login-filled.png",
        "03-home.png",
    ]
