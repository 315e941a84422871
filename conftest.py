"""Root pytest configuration: doctest namespace for the package's docstring examples, and the
thread count the suite runs at (``PYRO_FLOWS_TEST_THREADS``, default 1; run it with 2 as well: no
assertion may depend on the thread count)."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch


def pytest_configure(config):
    # the tests run small tensors: one intra-op thread is faster than two contending ones
    threads = os.environ.get("PYRO_FLOWS_TEST_THREADS", "1")
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"PYRO_FLOWS_TEST_THREADS must be a positive integer, got {threads!r}")
    torch.set_num_threads(int(threads))
