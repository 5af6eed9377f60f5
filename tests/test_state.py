"""tasks.model.state: a fitted model is a folder of plain arrays and JSON, written atomically."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from tasks.data.demo import DemoData
from tasks.data.encode import build_spec
from tasks.model import state
from tasks.model.store_day import ModelStructure, Site
from tasks.pipeline import prior_store_params


def fitted_model(demo: DemoData, seed: int, anchor: dt.date = dt.date(2015, 6, 13)) -> state.FittedModel:
    """A FittedModel with random parameters of the right shapes (no fit needed to test storage)."""
    rng = np.random.default_rng(seed)
    spec = build_spec(demo.stores, yearly_fourier_order=3, monthly_fourier_order=1)
    # Positional: 120 days of history, 28-day level blocks, log offset.
    structure = ModelStructure.from_features(spec.features, 120, 28, 8.5 + seed)
    store_ids = demo.stores["Store"].to_numpy().astype(np.int32)
    params = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in prior_store_params(len(store_ids), structure).items()}
    for site in Site.GLOBAL:
        params[f"{site}.loc"] = rng.normal(size=(structure.n_pooled,)).astype(np.float32)
        params[f"{site}.scale"] = rng.random(structure.n_pooled).astype(np.float32)
    info = {"model_version": f"0.1.0+{seed:012d}", "seed": seed, "global_converged": True, "global_final_loss": 8.25}
    day_basis = np.linspace(0.0, 1.0, 20, dtype=np.float32).reshape(10, 2)
    return state.FittedModel(
        params=params, store_ids=store_ids, structure=structure, spec=spec, anchor=anchor, day_basis=day_basis, info=info
    )


def assert_same(a: state.FittedModel, b: state.FittedModel) -> None:
    assert sorted(a.params) == sorted(b.params)
    for key in a.params:
        assert a.params[key].dtype == b.params[key].dtype, key
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    np.testing.assert_array_equal(a.store_ids, b.store_ids)
    assert a.structure == b.structure
    assert a.spec == b.spec
    assert a.anchor == b.anchor
    assert a.info == b.info
    assert a.model_version == b.model_version


def test_save_load_round_trip(tiny_demo: DemoData, tmp_path: Path) -> None:
    model = fitted_model(tiny_demo, seed=1)
    folder = state.save(model, tmp_path / "forecast.model")
    assert folder == tmp_path / "forecast.model"
    loaded = state.load(folder)
    assert_same(model, loaded)
    np.testing.assert_array_equal(loaded.positions(model.store_ids[::-1]), np.arange(len(model.store_ids))[::-1])


def test_model_folder_holds_plain_arrays_and_json_only(tiny_demo: DemoData, tmp_path: Path) -> None:
    folder = state.save(fitted_model(tiny_demo, seed=2), tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == sorted([state.META_FILE, state.PARAMS_FILE])
    with np.load(folder / state.PARAMS_FILE, allow_pickle=False) as arrays:
        for key in arrays.files:
            assert arrays[key].dtype != object, key  # would need pickle to load
    meta = json.loads((folder / state.META_FILE).read_text())
    assert meta["state_version"] == state.STATE_VERSION
    assert meta["anchor"] == "2015-06-13"


def test_save_replaces_an_existing_folder_whole(tiny_demo: DemoData, tmp_path: Path) -> None:
    target = tmp_path / "forecast.model"
    state.save(fitted_model(tiny_demo, seed=3), target)
    (target / "stray.txt").write_text("left from an older run")
    (tmp_path / ".forecast.model.999999999.0badf00d.tmp").mkdir()  # left by a run (a dead pid) that crashed while writing
    newer = fitted_model(tiny_demo, seed=4, anchor=dt.date(2015, 7, 31))
    state.save(newer, target)
    assert_same(newer, state.load(target))
    assert not (target / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast.model"]  # no .tmp or .old folders left


def test_a_failed_save_leaves_the_existing_model_intact(
    tiny_demo: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "forecast.model"
    old = fitted_model(tiny_demo, seed=5)
    state.save(old, target)

    def broken_savez(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        state.save(fitted_model(tiny_demo, seed=6), target)
    monkeypatch.undo()
    assert_same(old, state.load(target))


def test_load_of_a_folder_that_is_not_a_model_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(FileNotFoundError, match="not a fitted model folder"):
            state.load(folder)


def test_load_refuses_another_state_version(tiny_demo: DemoData, tmp_path: Path) -> None:
    folder = state.save(fitted_model(tiny_demo, seed=7), tmp_path / "m")
    meta = json.loads((folder / state.META_FILE).read_text())
    meta["state_version"] = state.STATE_VERSION + 1
    (folder / state.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="state version"):
        state.load(folder)


def test_store_params_must_match_the_store_ids(tiny_demo: DemoData) -> None:
    model = fitted_model(tiny_demo, seed=8)
    with pytest.raises(ValueError, match="stores"):
        state.FittedModel(model.params, model.store_ids[:-1], model.structure, model.spec, model.anchor, model.day_basis)
    with pytest.raises(ValueError, match="no parameters for stores"):
        model.positions(np.array([9999]))
