"""Shared fixtures: a tiny demo data set, drawn and written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.demo import DemoData, generate_demo

# Small enough that a whole run (validate, fit, forecast) takes seconds on 2 cores.
TINY_DEMO = {"seed": 0, "n_stores": 8, "n_history_days": 120, "horizon": 14, "n_new_stores": 1, "n_gapped_stores": 1}


@pytest.fixture(scope="session")
def tiny_demo() -> DemoData:
    return generate_demo(**TINY_DEMO)


@pytest.fixture(scope="session")
def tiny_demo_files(tiny_demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.csv, store.csv, test.csv of the tiny demo; read-only by convention: copy before changing."""
    return tiny_demo.write(tmp_path_factory.mktemp("tiny_demo"))
