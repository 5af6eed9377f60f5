"""Typed run configuration, validated at the boundary (CLI, flow parameters).

One pydantic model per concern; ``RunConfig`` is the whole configuration of a
run of the main job. Nothing else travels through the code as a dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.forecast import DEFAULT_QUANTILES
from tasks.inference import FitSettings

LOCAL_PARTICLES = 4
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


class FitConfig(BaseModel):
    """How the global and local fits run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(0.02, gt=0.0, le=1.0, description="Adam step size")
    max_steps: int = Field(3000, ge=100, description="step cap of the global fit")
    local_max_steps: int = Field(1500, ge=100, description="step cap of a local fit")
    chunk_steps: int = Field(100, ge=10, description="steps per compiled chunk; convergence is checked between chunks")
    tolerance: float = Field(
        1e-4, gt=0.0, description="converged when the loss trend predicts less relative improvement than this per chunk"
    )
    patience: int = Field(2, ge=1, description="consecutive converged checks before stopping")
    window_chunks: int = Field(5, ge=2, description="chunks in the window whose loss trend decides convergence")
    subsample_size: int | None = Field(
        512, ge=1, description="stores per step of the global fit (all stores when fewer); None uses all"
    )
    block_days: int = Field(28, ge=7, le=366, description="days per step of each store's level random walk")
    short_history_days: int = Field(28, ge=1, description="stores with fewer observed days are fitted locally")
    yearly_fourier_order: int = Field(4, ge=0, le=10)
    monthly_fourier_order: int = Field(2, ge=0, le=6)

    def settings(self, local: bool = False) -> FitSettings:
        return FitSettings(
            learning_rate=self.learning_rate,
            max_steps=self.local_max_steps if local else self.max_steps,
            chunk_steps=self.chunk_steps,
            tolerance=self.tolerance,
            patience=self.patience,
            window_chunks=self.window_chunks,
            subsample_size=None if local else self.subsample_size,
            # A local fit sees few observations: more particles quiet its loss.
            num_particles=LOCAL_PARTICLES if local else 1,
        )

    @model_validator(mode="after")
    def _chunks_fit_the_cap(self) -> FitConfig:
        if self.chunk_steps > min(self.max_steps, self.local_max_steps):
            raise ValueError(f"chunk_steps={self.chunk_steps} exceeds a step cap ({self.max_steps}, {self.local_max_steps})")
        return self


class ForecastConfig(BaseModel):
    """What the forecast reports and how it is drawn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_draws: int = Field(1000, ge=10, le=100_000, description="posterior predictive draws per store and day")
    quantiles: tuple[Probability, ...] = Field(DEFAULT_QUANTILES, min_length=1)
    chunk_stores: int = Field(256, ge=1, description="stores per compiled chunk; bounds memory")

    @field_validator("quantiles")
    @classmethod
    def _contract_quantiles(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        missing = [q for q in DEFAULT_QUANTILES if q not in value]
        if missing:
            raise ValueError(f"the forecast file contract needs quantiles {list(DEFAULT_QUANTILES)}; missing {missing}")
        return tuple(sorted(set(value)))


class RunConfig(BaseModel):
    """The main job: read, validate, encode, fit, forecast, export."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: Path = Field(description="Kaggle-format train file (CSV or Parquet)")
    stores: Path = Field(description="Kaggle-format store file (CSV or Parquet)")
    future: Path = Field(description="future calendar in Kaggle test.csv format (CSV or Parquet)")
    out: Path = Field(description="forecast Parquet file to write")
    seed: int = Field(0, ge=0, description="seed of the JAX random key; same seed and data give the same forecast")
    state_dir: Path | None = Field(None, description="where to write the fitted model (default: next to --out)")
    fit: FitConfig = FitConfig()
    forecast: ForecastConfig = ForecastConfig()

    @field_validator("out")
    @classmethod
    def _parquet_out(cls, value: Path) -> Path:
        if value.suffix.lower() not in (".parquet", ".pq"):
            raise ValueError(f"--out must name a .parquet file, got {value}")
        return value

    @property
    def fitted_dir(self) -> Path:
        return self.state_dir or self.out.with_name(self.out.stem + ".model")
