"""Serving tests run tiny batches: one torch thread is fastest for them, and several only contend.

Measured on the shared 2-core machine under load: ``tests/serve/test_batcher.py`` took 87 s with torch's default of
2 threads and 13 s with 1. The previous setting is restored after each module, so other tests are not affected.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
