"""Shared test settings: no hub access, ever; paths of the repository."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    "Run a module's tiny models on one thread: many times faster, above all when other jobs share the CPU."
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sigint_default():
    "`preexec_fn` for a child that must take Ctrl-C as a terminal does, even where this test run ignores SIGINT (nohup, `&`)."
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
