"""The web demo (issue 13): `rewardsteer serve` in a real headless browser (Debian's Chromium driven by
Playwright; no browser download) runs a short steering job through the page and shows the result; bad input shows
the CLI's one-line error, never a traceback."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rewardsteer.errors import RewardsteerError

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "img" / "serve.png"


def test_page_errors_are_the_cli_errors(tmp_path, run_cli):
    from rewardsteer.serve import SteeringRun, one_line

    for options, args in [({"model": "mnist-gan"}, ["--model", "mnist-gan"]), ({"class": 12}, ["--class", "12"]),
                          ({"reward": ["proxy:mnist-proxy-9"]}, ["--reward", "proxy:mnist-proxy-9"])]:
        with pytest.raises(RewardsteerError) as e:
            SteeringRun(options, tmp_path / "x")
        cli = run_cli("run", *args, "--out", str(tmp_path / "cli"))
        assert cli.returncode == 2 and one_line(e.value) == cli.stderr.strip()
    run = SteeringRun({"method": "best_of_n", "candidates": 8, "n": 2, "max_nfe": 1, "reward": ["mnist-proxy-0"],
                       "robust": "none", "seed": 0}, tmp_path / "budget").start()
    assert run.wait(60) and run.error.startswith("error: best_of_n: the budget") and "\n" not in run.error


def test_a_page_run_streams_its_trace_and_stops_on_request(tmp_path):
    import json

    from rewardsteer.serve import SteeringRun

    run = SteeringRun({"method": "reno", "iters": 100000, "n": 2, "reward": ["mnist-proxy-0"], "robust": "none",
                       "heldout": ["none"], "seed": 0}, tmp_path / "stop").start()
    deadline = time.time() + 60
    while len(run.rows) < 3 and run.running and time.time() < deadline:
        time.sleep(0.05)
    assert len(run.rows) >= 3 and run.rows[-1][0] > run.rows[0][0]  # (nfe, mean, best) rows as it runs
    run.stop()
    assert run.wait(60) and run.error is None
    result = json.loads((tmp_path / "stop" / "result.json").read_text())
    assert result["stopped"] == "callback" and len(result["trace"]) >= 3
    assert any(line.startswith("cost:") for line in run.summary)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    pytest.importorskip("gradio", reason="the web demo needs Gradio: pip install 'rewardsteer[demo]'")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the server writes it until the fixture ends
    proc = subprocess.Popen([sys.executable, "-m", "rewardsteer.cli", "serve", "--port", str(port), "--threads", "1",
                             "--workdir", str(tmp_path / "runs"), "--allow-path", str(tmp_path)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"rewardsteer serve did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def pick(page, elem: str, value: str, clear: bool = False) -> None:
    """Choose `value` in the Gradio dropdown #elem (typed, then Enter)."""
    box = page.locator(f"#{elem} input[role=combobox]")
    if clear:
        page.locator(f"#{elem} .remove-all").click()
    box.click()
    box.fill(value)
    box.press("Enter")
    page.locator("h1").click()  # close the list


def test_steering_through_the_page_in_a_headless_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip install playwright)")
    exe = chromium()
    if exe is None:
        pytest.skip("Chromium is missing (apt-get install chromium): browser test skipped")
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(server, wait_until="domcontentloaded")
            page.wait_for_selector("#run", timeout=60_000)
            pick(page, "method", "reno")
            page.locator("#iters input").fill("15")
            page.locator("#n input").fill("4")
            page.locator("#target input").fill("3")
            pick(page, "rewards", "mnist-proxy-0", clear=True)
            pick(page, "robust", "none")
            page.locator("#run").click()
            expect(page.locator("#summary textarea")).to_have_value(re.compile("cost: 64 NFE"), timeout=90_000)
            expect(page.locator("#status")).to_contain_text("done")
            expect(page.locator("#cost")).to_contain_text("64 NFE, 60 backward, 64 reward calls")
            expect(page.locator("#alarm")).to_contain_text("over-optimization alarm")
            expect(page.locator("#grid img")).to_be_visible()
            expect(page.locator("#trace img")).to_be_visible()
            expect(page.locator("#download")).to_contain_text("result")
            summary = page.locator("#summary textarea").input_value()
            assert "score (reno, completed)" in summary and "judges (target class)" in summary
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("REWARDSTEER_UPDATE_SCREENSHOT"):
                shutil.copy(shot, SCREENSHOT)

            pick(page, "rewards", "bt:/etc/passwd", clear=True)  # a path outside --allow-path: refused, one line
            page.locator("#run").click()
            expect(page.locator("#status")).to_contain_text("error: reward 'bt:/etc/passwd': /etc/passwd is outside",
                                                            timeout=30_000)
            pick(page, "rewards", "mnist-proxy-0", clear=True)
            pick(page, "method", "best_of_n")
            page.locator("#max_nfe input").fill("1")  # an impossible budget
            page.locator("#run").click()
            expect(page.locator("#status")).to_contain_text("error: best_of_n: the budget (nfe=1)", timeout=60_000)
            assert "Traceback" not in page.content()
        finally:
            browser.close()
    log = (tmp_path / "server.log").read_text()  # every error one line in the server's log too
    assert "rewardsteer serve: error: reward 'bt:/etc/passwd'" in log and "Traceback" not in log


def test_the_page_reads_files_only_under_allow_path_and_caps_budgets(tmp_path):
    from rewardsteer.bundled.training import save_model
    from rewardsteer.rewards.preference import KIND, reward_net
    from rewardsteer.serve import PagePolicy, SteeringRun

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    save_model(reward_net(4, 8), allowed, "m", {"kind": KIND})
    save_model(reward_net(4, 8), outside, "m", {"kind": KIND})
    (allowed / "link.safetensors").symlink_to(outside / "m.safetensors")
    policy = PagePolicy(allow_paths=(str(allowed),), max_nfe=500, max_seconds=30)
    run = SteeringRun({"reward": [f"bt:{allowed}/m.safetensors"], "method": "best_of_n", "robust": "none"},
                      tmp_path / "run", policy=policy)
    assert run.spec.max_nfe == 500 and run.spec.max_seconds == 30  # no budget given: the caps
    for path in (outside / "m.safetensors", allowed / "link.safetensors", allowed / ".." / "outside" / "m"):
        with pytest.raises(RewardsteerError, match="outside the folders this page may read"):
            SteeringRun({"reward": [f"bt:{path}"]}, tmp_path / "run", policy=policy)
    messages = []
    for path in (allowed / "m.safetensors", tmp_path / "no-such-file"):  # existing or not: the same answer
        with pytest.raises(RewardsteerError) as e:
            SteeringRun({"reward": [f"bt:{path}"]}, tmp_path / "run")
        messages.append(str(e.value).replace(str(path), "PATH"))
    assert messages[0] == messages[1] and "--allow-path" in messages[0]
    with pytest.raises(RewardsteerError, match="above this page's cap of 500"):
        SteeringRun({"max_nfe": 501}, tmp_path / "run", policy=policy)
    assert SteeringRun({"max_nfe": 500, "robust": "none"}, tmp_path / "run", policy=policy).spec.max_nfe == 500
