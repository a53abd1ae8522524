"""Shared fixtures: a tiny random model for unit tests, the embedded model for `real_model` tests."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    from flowsteer import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def real_model():
    from flowsteer import load_model

    return load_model(device="cpu")


def hooks_attached(model) -> int:
    """Number of forward hooks currently registered on any hook point of ``model``."""
    return sum(len(point._forward_hooks) for point in model.hook_dict.values())
