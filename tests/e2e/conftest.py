"""Browser-test harness: the real app in a subprocess on a free loopback port, driven by
Playwright through Debian's chromium (never a downloaded browser).

Screenshots of each step land in ``artifacts/e2e/`` (README, "The studio")."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.llm_replay import RECORDING

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM = os.environ.get("IFS_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"app did not answer at {url} in {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """Start ``python app.py`` with the tiny test CLIP, a temp database, and the bundled LLM's
    recorded real answers (tests/llm_replay.py), so what the test sees does not depend on what a
    sampled model writes on this machine. ``IFS_E2E_LLM=bundled`` runs it on the live model."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian chromium not found at {CHROMIUM} (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("studio")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "IFS_DB": str(tmp / "studio.sqlite"),
        "IFS_DATA_DIR": str(tmp / "data"),
        "IFS_CLIP_MODEL": "tiny-rn",
        "IFS_CLIP_PRETRAINED": "none",
        "IFS_LLM": os.environ.get("IFS_E2E_LLM", "replay"),
        "IFS_LLM_REPLAY": str(RECORDING),
        "IFS_LLM_NAME": os.environ.get("IFS_E2E_LLM_NAME", "smollm2"),
        "IFS_HOST": "127.0.0.1",
        "IFS_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    log = tmp / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, proc, log)
        yield {"url": url, "tmp": tmp, "log": log, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(request):
    """``shots(page, name)`` saves ``artifacts/e2e/<test module>/NN-name.png`` (numbered in step
    order; each module's folder is emptied when it starts)."""
    folder = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    counter = {"n": 0}

    def take(page, name: str) -> Path:
        counter["n"] += 1
        path = folder / f"{counter['n']:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
