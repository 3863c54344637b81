"""The MLflow UI, looked at in a real browser: a small sweep, then the exact `mlflow ui`
command its summary printed (on a free port), then headless Chromium driven by Playwright.

Checks what a user sees: the summary's link opens the sweep's parent run with its
description; the trials are nested under the parent (hidden until it is expanded) with
names that say what was tried; the compare view shows the tuned parameters. Screenshots
go to the test's folder (tmp_path).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, run_sweep

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# MLflow 3 opens its assistant panel on a first visit; it would cover half the page.
NO_ASSISTANT = (
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
)
TIMEOUT_MS = 30_000

if not CHROMIUM.exists():
    pytest.skip(
        "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("ui")
    proc = run_sweep(cwd, "num_samples=4", "trainer.max_epochs=3", "scheduler.grace_period=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # verbose=0: nothing from Ray, Lightning, MLflow or alembic reaches the user.
    assert proc.stderr == "", proc.stderr
    return cwd, proc.stdout


def test_terminal_output_is_plain_lines_then_a_summary(swept) -> None:
    """Not a terminal (captured): no carriage returns, one line per change, then the summary."""
    cwd, stdout = swept
    assert "\r" not in stdout and "\033" not in stdout
    lines = stdout.splitlines()
    assert lines[0].startswith("Sweep mlp_digits: 4 trials × ≤3 epochs, random search, ASHA")
    progress = [line for line in lines if re.match(r"\[\d\d:\d\d\] ", line)]
    assert re.match(r"\[\d\d:\d\d\] 4/4 done \| 0 running \| \d stopped early", progress[-1])

    # A line when something changed (a trial ended, a new best), not at every report;
    # an unchanged line only as the once-a-minute sign of life.
    def state(line: str) -> tuple[int, str]:
        minutes, seconds = line[1:6].split(":")
        changing = r"^\[.*?\] | \| ~.*$| \| \d running"  # clock, estimate, running count
        return int(minutes) * 60 + int(seconds), re.sub(changing, "", line)

    for (t1, a), (t2, b) in itertools.pairwise(map(state, progress)):
        assert a != b or t2 - t1 >= 59, progress
    assert any(" left" in line for line in progress)  # an estimate while trials run
    for heading in ("Best: trial", "  re-train it  sweep --config-dir", "Outputs  ", "MLflow   "):
        assert any(line.startswith(heading) for line in lines), heading
    assert f"Outputs  {cwd}/sweeps/mlp_digits/" in stdout


def printed_ui(stdout: str) -> tuple[str, str]:
    """The `mlflow ui ...` command and the link the summary printed."""
    command = re.search(r"^MLflow\s+(mlflow ui .*)$", stdout, re.MULTILINE)
    link = re.search(r"^\s+then open (\S+)$", stdout, re.MULTILINE)
    assert command and link, stdout
    return command.group(1).strip(), link.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(swept, tmp_path_factory) -> Iterator[dict]:
    """The summary's own `mlflow ui` command, on a free port, one worker, stopped by pid."""
    cwd, stdout = swept
    command, link = printed_ui(stdout)
    port = free_port()
    argv = shlex.split(command.replace("--port 5000", f"--port {port}"))
    argv += ["--host", "127.0.0.1", "--workers", "1"]
    log = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        server = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server, log)
        yield {"base": base, "link": link.replace(":5000/", f":{port}/"), "command": command}
    finally:
        # The server and its uvicorn worker share the session we started it in.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_healthy(base: str, server: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow ui exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow ui not healthy after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def runs(ui) -> dict:
    client = MlflowClient(ui["base"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "mlp_digits"]
    found = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    return {"experiment": experiment.experiment_id, "parent": parent, "children": children}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_init_script(NO_ASSISTANT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def test_readme_ui_command_is_the_one_the_summary_prints(swept) -> None:
    cwd, stdout = swept
    command, _ = printed_ui(stdout)
    readme = (REPO / "README.md").read_text()
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000" in readme
    assert command == f"mlflow ui --backend-store-uri sqlite:///{cwd}/mlflow.db --port 5000"


def test_summary_link_opens_the_parent_run_with_its_description(ui, runs, page, tmp_path) -> None:
    page.goto(ui["link"])
    parent = runs["parent"]
    page.get_by_text(parent.info.run_name).first.wait_for()
    description = page.get_by_text(re.compile(r"Best: trial \d+, val_acc = 0\.\d+")).first
    description.wait_for()
    best = parent.data.tags["sweep.best_trial"]
    assert f"Best: trial {int(best.rsplit('_', 1)[1])}," in description.inner_text()
    # The parent lists its trials as child runs, by their names.
    for child in runs["children"]:
        assert page.get_by_text(child.info.run_name).count() >= 1, child.info.run_name
    page.screenshot(path=tmp_path / "parent_run.png")


def test_trials_are_nested_under_the_parent(ui, runs, page, tmp_path) -> None:
    page.goto(f"{ui['base']}/#/experiments/{runs['experiment']}/runs?workflowType=machine_learning")
    parent = runs["parent"]
    parent_cell = page.locator("[role=gridcell]", has_text=parent.info.run_name)
    parent_cell.wait_for()
    names = sorted(child.info.run_name for child in runs["children"])
    assert all(re.fullmatch(r"trial \d{3}  lr=\S+ hidden=\d+ dropout=\S+", n) for n in names)
    # Collapsed: only the parent is a row; its trials appear when it is expanded.
    assert page.locator("[role=gridcell]", has_text=names[0]).count() == 0
    page.screenshot(path=tmp_path / "runs_collapsed.png")
    parent_cell.locator("button").first.click()
    for name in names:
        page.locator("[role=gridcell]", has_text=name).first.wait_for()
    page.screenshot(path=tmp_path / "runs_expanded.png")


def test_compare_view_shows_the_tuned_parameters(ui, runs, page, tmp_path) -> None:
    children = runs["children"]
    query = urlencode(
        {
            "runs": json.dumps([c.info.run_id for c in children]),
            "experiments": json.dumps([runs["experiment"]]),
            "workflowType": "machine_learning",
        }
    )
    page.goto(f"{ui['base']}/#/compare-runs?{query}")
    page.get_by_text(f"Comparing {len(children)} Runs").first.wait_for()
    for key in ("model.lr", "model.hidden", "model.dropout"):
        page.get_by_text(key, exact=True).first.wait_for()
    for child in children:
        assert page.get_by_text(child.info.run_name).count() >= 1, child.info.run_name
    page.screenshot(path=tmp_path / "compare.png")
    # Further down: the tuned values side by side, one row per parameter.
    page.get_by_text("model.lr", exact=True).last.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "compare_parameters.png")
