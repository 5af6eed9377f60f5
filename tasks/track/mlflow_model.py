"""The registered forecast model, as MLflow models-from-code (no pickled Python object).

MLflow saves this file beside the model's artifacts (the fitted-model folder
and the store attributes) and runs it on load: ``set_model`` names the model.
``predict`` takes a future calendar in Kaggle test.csv columns (pandas) and
returns the forecast file's rows; params ``seed`` and ``num_draws`` are optional.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

FITTED_ARTIFACT = "fitted"
STORES_ARTIFACT = "stores"


class StoreForecastModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from tasks.model import state

        self.fitted = state.load(context.artifacts[FITTED_ARTIFACT])
        self.stores_path = Path(context.artifacts[STORES_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import jax

        from tasks.config import ForecastConfig
        from tasks.data.validate import read_validated_calendar
        from tasks.pipeline import forecast_calendar

        params = params or {}
        config = ForecastConfig(num_draws=int(params.get("num_draws", ForecastConfig().num_draws)))
        with tempfile.TemporaryDirectory(prefix="bhm-predict-") as tmp:
            # Through a CSV file, so that the calendar meets the same validation as a file given to a flow.
            calendar = Path(tmp) / "future.csv"
            model_input.to_csv(calendar, index=False, date_format="%Y-%m-%d")
            stores, future = read_validated_calendar(self.stores_path, calendar)
        frame = forecast_calendar(self.fitted, stores, future, config, jax.random.key(int(params.get("seed", 0))))
        return frame.to_pandas()


mlflow.models.set_model(StoreForecastModel())
