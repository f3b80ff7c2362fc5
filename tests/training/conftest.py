"""Fixtures for the training tests: small synthetic VOC+SBD shards built by the real builder."""

import os

import pytest

from tests.training.helpers import build_synthetic_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """`{"train": glob, "val": glob}` of a small synthetic train_aug / val set (72x96 images)."""
    return build_synthetic_shards(str(tmp_path_factory.mktemp("synthetic")))


@pytest.fixture(scope="session")
def learn_shards(tmp_path_factory):
    """A larger synthetic set at 120x160 for the "it learns" test."""
    return build_synthetic_shards(
        str(tmp_path_factory.mktemp("synthetic_learn")), num_train=160, num_val=24,
        image_size=(120, 160),
    )


@pytest.fixture
def model_dir(tmp_path):
    path = str(tmp_path / "model")
    os.makedirs(path, exist_ok=True)
    return path
