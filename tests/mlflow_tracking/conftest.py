"""Fixtures: migrated sqlite stores, an experiment name per test.

Creating an MLflow sqlite database runs its migrations (seconds), so the session migrates
one database and every store here starts as a copy of that file.
"""

from __future__ import annotations

import re
import shutil

import pytest
from mlflow import MlflowClient


@pytest.fixture(scope="session")
def pristine_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates it
    return path


def copy_store(pristine_db, directory) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pristine_db, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


@pytest.fixture(scope="session")
def store_uri(pristine_db, tmp_path_factory) -> str:
    """One store for the session; tests keep apart by experiment name."""
    return copy_store(pristine_db, tmp_path_factory.mktemp("store"))


@pytest.fixture
def fresh_store(pristine_db, tmp_path):
    """A store of this test's own, with `copy_store` for more."""
    return lambda name="store": copy_store(pristine_db, tmp_path / name)


@pytest.fixture
def experiment(request) -> str:
    """An experiment name of this test's own."""
    return re.sub(r"[^\w.-]+", "_", request.node.name)
