"""Shared test set-up: offline, deterministic, gentle on a 2-core machine."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# OpenMP threads that spin at every barrier crawl on a shared, loaded CPU (tests run many small ops)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local stand-in for the Hugging Face Hub (tests/hub_server.py) serving one small GGUF
    (``hub.data`` at ``REPO``/``FILE``), huggingface_hub pointed at it with an empty cache."""
    from tests.hub_server import FILE, REPO, FakeHub, online, tiny_gguf

    data = tiny_gguf()
    h = FakeHub({(REPO, FILE): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    h.data = data
    yield h
    h.close()
