"""Root pytest configuration: doctest namespace for the package's docstring examples."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch


def pytest_configure(config):
    # the tests run small tensors: one intra-op thread is faster than two contending ones
    torch.set_num_threads(1)
