"""The demo's state in the Dagster UI, in a real browser: the demo run, `dagster-webserver` over
it, and Debian's `chromium` driven by Playwright (no browser download). Shared by the tests and
`scripts/screenshots.py`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The lineage graph's groups and one asset of each, to know when a group is expanded.
GROUPS = {"batch": "ratings_ml_training", "ml": "recommender_model", "vectors": "item_emb",
          "streaming": "recommendations", "feedback": "interactions"}
LINEAGE_VIEWPORT = (2600, 1600)  # the whole lineage, every group expanded, at full detail
ASSETS = ("classicmodels_ratings", "ratings_ml_training", "recommender_model", "item_emb", "user_emb",
          "item_attributes", "customer_purchases", "customer_recommendations", "recommendations", "interactions",
          "online_metrics")


def demo_env(home: Path) -> dict:
    """The environment of a user who runs the platform with RECSYS_HOME=home (no test variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") or k.startswith("RECSYS_TEST")}
    env.update(RECSYS_HOME=str(home), DAGSTER_HOME=str(home / "dagster_home"), TMPDIR=str(home / "tmp"))
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def run_demo(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys_platform.cli", "demo"], cwd=REPO, env=demo_env(home),
                          capture_output=True, text=True, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


@contextmanager
def dagster_ui(home: Path, timeout: float = 120) -> Iterator[int]:
    """`dagster-webserver` over the state under `home` (what `make ui` serves); yields its port."""
    port = free_port()
    log = open(home / "webserver.log", "w")  # noqa: SIM115 (closed in finally, outlives the Popen)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=demo_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # Background processes ignore SIGINT/SIGTERM unless the default handlers are restored.
        preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), signal.signal(signal.SIGTERM, signal.SIG_DFL)))
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if graphql(port, "{ version }")["version"]:
                    break
            if proc.poll() is not None:
                raise RuntimeError("the webserver exited: " + (home / "webserver.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"the webserver did not answer in {timeout:.0f} s")
            time.sleep(1)
        graphql(port, "mutation { setNuxSeen }")  # what "Skip" on the community dialog records
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Debian's chromium is not installed: scripts/setup.sh --browser (apt-get install chromium)")
    return path


@contextmanager
def browser_page(width: int = 1400, height: int = 900) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: the tests run as root, where Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def open_ui(page, port: int, path: str) -> None:
    """Open a UI page and wait until it has loaded, dismissing the community sign-up dialog."""
    page.goto(f"http://127.0.0.1:{port}{path}")
    page.wait_for_load_state("networkidle")
    # The dialog shows once per browser profile, or not at all: a missing one is no error.
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Skip").click(timeout=3_000)


def scroll_to_top(page, text: str) -> None:
    """Scroll the element showing `text` (exactly) to the top of its scrolling pane."""
    page.get_by_text(text, exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    time.sleep(0.5)


def show_whole_lineage(page, width: int, height: int) -> None:
    """The global lineage with every group expanded, at full detail (LINEAGE_VIEWPORT fits it).

    The UI centres the graph when a page loads (zooming out only if it does not fit) and draws
    only what is in view: a group is expanded by clicking its label where it shows, then the page
    is reloaded to be centred again, until every group's member shows."""
    def reload() -> None:
        page.reload()
        page.wait_for_load_state("networkidle")
        time.sleep(1.0)

    for _ in range(len(GROUPS) + 1):
        collapsed = [group for group, member in GROUPS.items() if not page.get_by_text(member, exact=True).count()]
        if not collapsed:
            return
        canvas_left = page.get_by_text("Search and filter assets").first.bounding_box()["x"]
        for group in collapsed:
            for label in page.get_by_text(group, exact=True).all():
                box = label.bounding_box()
                if box and canvas_left < box["x"] < width - 60 and 90 < box["y"] < height - 20:
                    label.click()
                    time.sleep(0.6)
                    break
        reload()
    raise AssertionError(f"groups still collapsed: {collapsed}")
