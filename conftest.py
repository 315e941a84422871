"""Root pytest configuration: doctest namespace for the package's docstring examples."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch
