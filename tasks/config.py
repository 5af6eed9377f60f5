"""Typed run configuration, validated at the boundary (CLI, flow parameters).

One pydantic model per concern; ``RunConfig`` is the whole configuration of a
run of the main job. Nothing else travels through the code as a dict.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.forecast.draws import DEFAULT_QUANTILES
from tasks.model.inference import FitSettings

LOCAL_PARTICLES = 4
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


def _parquet_file(value: Path) -> Path:
    if value.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError("must name a .parquet file")
    return value


ParquetFile = Annotated[Path, AfterValidator(_parquet_file)]


def model_dir_beside(out: Path) -> Path:
    """Where a run writes its fitted model by default: beside its forecast file."""
    return out.with_name(out.stem + ".model")


class FitConfig(BaseModel):
    """How the global and local fits run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(0.02, gt=0.0, le=1.0, description="Adam step size")
    max_steps: int = Field(3000, ge=100, description="step cap of the global fit")
    local_max_steps: int = Field(3000, ge=100, description="step cap of a local fit")
    chunk_steps: int = Field(100, ge=10, description="steps per compiled chunk; convergence is checked between chunks")
    tolerance: float = Field(
        1e-4, gt=0.0, description="converged when the loss trend predicts less relative improvement than this per chunk"
    )
    patience: int = Field(2, ge=1, description="consecutive converged checks before stopping")
    window_chunks: int = Field(5, ge=2, description="chunks in the window whose loss trend decides convergence")
    # 256 rather than 512: the mixture likelihood costs ~3 NB densities per cell; on Rossmann the
    # fit converges in fewer steps at the same scores (backtest RMSPE, coverage within 0.5 points).
    subsample_size: int | None = Field(
        256, ge=1, description="stores per step of the global fit (all stores when fewer); None uses all"
    )
    block_days: int = Field(28, ge=7, le=366, description="days per step of each store's level random walk")
    short_history_days: int = Field(28, ge=1, description="stores with fewer observed days are fitted locally")
    history_bucket_days: int = Field(
        56,
        ge=1,
        le=366,
        description="a fit's history is padded with empty days to a multiple of this many, so that histories a few days "
        "apart (consecutive nightly runs, nearby backtest origins) share compiled programs; 1: no padding",
    )
    pooling: Literal["partial", "complete", "none", "seed_like"] = Field(
        "partial", description="store-level pooling: the model (partial), or the evaluation's comparisons"
    )
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
    out: ParquetFile = Field(description="forecast Parquet file to write")
    seed: int = Field(0, ge=0, description="seed of the JAX random key; same seed and data give the same forecast")
    state_dir: Path | None = Field(None, description="where to write the fitted model (default: next to --out)")
    fit: FitConfig = FitConfig()
    forecast: ForecastConfig = ForecastConfig()

    @property
    def fitted_dir(self) -> Path:
        return self.state_dir or model_dir_beside(self.out)


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class TrackingConfig(BaseModel):
    """Where a run is recorded in MLflow (the tracking URI comes from the environment, see tasks.track.tracking)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="record the run in MLflow")
    experiment: str = Field("bhm-forecast", min_length=1, description="MLflow experiment of the runs")
    registered_model: str = Field(
        "bhm-forecast", pattern=MODEL_NAME_PATTERN, description="MLflow registered model that fitted models are versions of"
    )
    plot_stores: int = Field(4, ge=0, le=20, description="stores shown in the forecast plot")


class ChampionGates(BaseModel):
    """Backtest scores a model version must reach before the ``champion`` alias moves to it (None: no gate)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str = Field("champion", pattern=MODEL_NAME_PATTERN, description="alias that marks the model in use")
    max_rmspe: float | None = Field(0.25, gt=0.0, description="largest backtest RMSPE of the mean")
    max_wql: float | None = Field(None, gt=0.0, description="largest backtest weighted quantile loss")
    max_coverage_error: float | None = Field(
        0.10, gt=0.0, lt=1.0, description="largest distance of the 50% and 90% interval coverage from nominal"
    )

    def failures(self, scores: dict[str, float]) -> list[str]:
        """The gates that ``scores`` (tasks.evaluate.backtest.score) fail, in words; empty when all pass."""
        failed = []
        if self.max_rmspe is not None and not scores["rmspe"] <= self.max_rmspe:
            failed.append(f"RMSPE {scores['rmspe']:.4f} > {self.max_rmspe}")
        if self.max_wql is not None and not scores["wql"] <= self.max_wql:
            failed.append(f"wQL {scores['wql']:.4f} > {self.max_wql}")
        if self.max_coverage_error is not None:
            for key, nominal in (("coverage_50", 0.5), ("coverage_90", 0.9)):
                if not abs(scores[key] - nominal) <= self.max_coverage_error:
                    failed.append(f"{key} {scores[key]:.3f} is more than {self.max_coverage_error} from {nominal}")
        return failed


class NightlyConfig(RunConfig):
    """The nightly flow: the main job, a backtest that gates the champion alias, and tracking."""

    backtest_days: int = Field(
        48, ge=0, le=366, description="days of the backtest before the history's end (0: none, and the alias stays)"
    )
    tracking: TrackingConfig = TrackingConfig()
    champion: ChampionGates = ChampionGates()


class ModelSource(BaseModel):
    """A fitted model: a fitted-model folder, or a registered model version by alias or number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = Field(None, description="fitted-model folder (written by a run); overrides the registry")
    registered_model: str = Field("bhm-forecast", pattern=MODEL_NAME_PATTERN, description="MLflow registered model")
    alias: str = Field("champion", pattern=MODEL_NAME_PATTERN, description="alias of the version to use")
    version: int | None = Field(None, ge=1, description="version number to use instead of the alias")

    @property
    def uri(self) -> str:
        suffix = f"/{self.version}" if self.version is not None else f"@{self.alias}"
        return f"models:/{self.registered_model}{suffix}"

    def describe(self) -> str:
        return str(self.path) if self.path is not None else self.uri




class TrainConfig(BaseModel):
    """The train flow: global fit (and local fits of short-history stores), saved and registered; no forecast."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: Path = Field(description="Kaggle-format train file (CSV or Parquet)")
    stores: Path = Field(description="Kaggle-format store file (CSV or Parquet)")
    state_dir: Path = Field(description="folder to write the fitted model to")
    seed: int = Field(0, ge=0, description="seed of the JAX random key")
    fit: FitConfig = FitConfig()
    tracking: TrackingConfig = TrackingConfig()


class ColdStartConfig(BaseModel):
    """The cold_start flow: local fits of new stores against a fitted model's globals, then their forecasts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: Path = Field(description="train file with the new stores' days (other stores' rows are ignored)")
    stores: Path = Field(description="Kaggle-format store file with the new stores' attributes")
    future: Path = Field(description="future calendar of the stores to forecast")
    out: ParquetFile = Field(description="forecast Parquet file to write")
    store_ids: tuple[int, ...] = Field((), description="stores to fit (default: the train stores the model lacks)")
    model: ModelSource = ModelSource()
    state_dir: Path | None = Field(None, description="where to write the model with the new stores (default: beside out)")
    seed: int = Field(0, ge=0, description="seed of the JAX random key")
    fit: FitConfig = FitConfig()
    forecast: ForecastConfig = ForecastConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def fitted_dir(self) -> Path:
        return self.state_dir or model_dir_beside(self.out)


class ForecastRunConfig(BaseModel):
    """The forecast flow: a future calendar forecast with an already fitted model, no refit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stores: Path = Field(description="Kaggle-format store file (CSV or Parquet)")
    future: Path = Field(description="future calendar in Kaggle test.csv format (CSV or Parquet)")
    out: ParquetFile = Field(description="forecast Parquet file to write")
    model: ModelSource = ModelSource()
    seed: int = Field(0, ge=0, description="seed of the JAX random key")
    forecast: ForecastConfig = ForecastConfig()
    tracking: TrackingConfig = TrackingConfig()


BaselineName = Literal["median_by_weekday", "poisson_per_store", "lightgbm", "pooled", "unpooled", "seed_like"]
# seed_like (the seed's model: the cold-start curve's reference for new stores) costs a global fit more; asked for by name.
BASELINE_NAMES: tuple[str, ...] = tuple(name for name in get_args(BaselineName) if name != "seed_like")
# The cold-start curve: held-out stores open on some day of the window before the origin; they are
# given N days of history for each N of the curve.
COLD_START_WINDOW_DAYS = 28
COLD_START_DAYS = (1, 3, 7, 14, 28)


class BacktestRunConfig(BaseModel):
    """The backtest flow: fit before each origin, forecast the horizon after it, score the model and baselines."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: Path = Field(description="Kaggle-format train file (CSV or Parquet): history and the days to score")
    stores: Path = Field(description="Kaggle-format store file (CSV or Parquet)")
    origins: tuple[dt.date, ...] = Field(
        (), description="first forecast day of each backtest (default: one, horizon_days before the history's end)"
    )
    horizon_days: int = Field(48, ge=1, le=366, description="days forecast and scored after each origin")
    baselines: tuple[BaselineName, ...] = Field(
        BASELINE_NAMES, description="baselines scored on the same rows (need the eval extra)"
    )
    out_dir: Path | None = Field(None, description="folder for the per-row scores and the metrics table (optional)")
    cold_start_stores: int = Field(0, ge=0, description="stores held out for the cold-start curve (0: no curve)")
    cold_start_days: tuple[Annotated[int, Field(ge=1, le=COLD_START_WINDOW_DAYS)], ...] = Field(
        COLD_START_DAYS, min_length=1, description="days of history the held-out stores are given: each opens that many days before the origin"
    )
    seed: int = Field(0, ge=0, description="seed of the JAX random key and of the held-out stores")
    fit: FitConfig = FitConfig()
    forecast: ForecastConfig = ForecastConfig()
    tracking: TrackingConfig = TrackingConfig()


class PanelFitConfig(BaseModel):
    """How the panel model (a dataset spec's store x product series) is fitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(0.02, gt=0.0, le=1.0, description="Adam step size")
    max_steps: int = Field(4000, ge=100, description="step cap of the fit")
    chunk_steps: int = Field(100, ge=10, description="steps per compiled chunk; convergence is checked between chunks")
    tolerance: float = Field(1e-4, gt=0.0, description="converged when the loss trend predicts less relative improvement per chunk")
    patience: int = Field(2, ge=1, description="consecutive converged checks before stopping")
    window_chunks: int = Field(5, ge=2, description="chunks in the window whose loss trend decides convergence")
    subsample_size: int | None = Field(512, ge=1, description="series per step (all when fewer); None uses all")
    block_periods: int | None = Field(
        None, ge=1, le=366, description="periods per step of each series' level walk (default: 13 weeks, 28 days)"
    )
    history_bucket_days: int = Field(
        56,
        ge=1,
        le=366,
        description="a fit's history is padded with empty periods to a multiple of this many days (8 weeks, 56 days by "
        "default), and its series with empty series to a multiple of a 64th to a 32nd of their number, so that histories "
        "a few periods apart or with a new series (consecutive nightly runs, nearby backtest origins) share compiled "
        "programs; 1: no padding",
    )
    shocks: tuple[Literal["chain", "store", "product"], ...] | None = Field(
        None, description="period shocks the model has (chain, store, product); None: the dataset spec's `shocks`"
    )
    level_walks: tuple[Literal["chain", "store", "product"], ...] | None = Field(
        None, description="level walks shared by all series, a store's, a product's; None: the dataset spec's `level_walks`"
    )
    dispersion_covariates: tuple[str, ...] | None = Field(
        None, description="covariates the likelihood's dispersion moves with; None: the dataset spec's `dispersion_covariates`"
    )
    recency_half_life: int | None = Field(
        None, ge=0, description="periods over which a period's weight in the likelihood halves (0: off); None: the dataset spec's"
    )
    shock_scales_ahead: Literal["auto", "moments", "fit"] = Field(
        "auto",
        description="the scales the forecast draws its period shocks at: 'moments' estimates them after the fit from the"
        " history's group-period residuals (tasks.model.shock_scales); 'fit' takes the fit's own; 'auto': moments for"
        " units, the fit's for amounts",
    )

    walk_scale_ahead: Literal["auto", "moments", "fit"] = Field(
        "auto",
        description="the scale the forecast draws each series' own level-walk steps at: 'moments' estimates it after the"
        " fit from the history's block-to-block changes (tasks.model.walk_scales); 'fit' takes the fit's own; 'auto':"
        " moments for amounts, the fit's for units",
    )

    group_walk_scales_ahead: Literal["auto", "groups", "shared"] = Field(
        "auto",
        description="the scales the forecast draws the store and product walks' steps at: 'groups' gives each store and"
        " product its own multiple of its walk's scale, from how far its level moved in the history against the typical"
        " group's (tasks.model.walk_scales.group_walk_multipliers); 'shared': the walk's one scale; 'auto': groups for"
        " amounts, shared for units",
    )

    def group_walk_scales(self, target_kind: str) -> bool:
        """Whether a fit of a ``target_kind`` target gives each store's and product's walk ahead its own multiple of the
        walk's scale. 'auto' does for amounts, where it was measured (walmart, EVALUATION.md); the unit data sets keep
        the shared scale (OJ has no store or product walks; the M5 shape's were not measured with it)."""
        return self.group_walk_scales_ahead == "groups" or (self.group_walk_scales_ahead == "auto" and target_kind == "amount")

    def moment_walk_scale(self, target_kind: str) -> bool:
        """Whether a fit of a ``target_kind`` target estimates its series' walk scale ahead from the history's
        block-to-block changes. 'auto' does for amounts, where it was measured (walmart, EVALUATION.md); the unit
        data sets' (OJ, Rossmann's shape, the M5 shape) intervals were tuned with the fit's and keep it."""
        return self.walk_scale_ahead == "moments" or (self.walk_scale_ahead == "auto" and target_kind == "amount")

    def moment_shock_scales(self, target_kind: str) -> bool:
        """Whether a fit of a ``target_kind`` target ('units' or 'amount') estimates its shocks' scales ahead from
        the moments. 'auto' does for units only: on walmart's dollars (issue 10's backtest, 4 origins) the log
        residuals' estimate put the chain's weekly shocks at 0.007-0.011, a third of the fit's, and the top levels'
        90% intervals, whose misses come from the horizon's drift more than from weekly shocks, covered less
        (total 82.7% -> 71.2%)."""
        return self.shock_scales_ahead == "moments" or (self.shock_scales_ahead == "auto" and target_kind == "units")

    def settings(self) -> FitSettings:
        return FitSettings(
            learning_rate=self.learning_rate,
            max_steps=self.max_steps,
            chunk_steps=self.chunk_steps,
            tolerance=self.tolerance,
            patience=self.patience,
            window_chunks=self.window_chunks,
            subsample_size=self.subsample_size,
        )

    @model_validator(mode="after")
    def _chunks_fit_the_cap(self) -> PanelFitConfig:
        if self.chunk_steps > self.max_steps:
            raise ValueError(f"chunk_steps={self.chunk_steps} exceeds max_steps={self.max_steps}")
        return self


class FanOutConfig(BaseModel):
    """Where a panel forecast's partitions of series, or a panel backtest's origins, run: in this process (the
    default), or as Prefect tasks on Dask (a LocalCluster, or the running cluster at ``dask_address``). The
    partitions and origins, and so the numbers, are the same wherever they run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["in-process", "dask"] = Field("in-process", description="where the partitions (or origins) run")
    dask_address: str | None = Field(None, min_length=1, description="scheduler of a running Dask cluster (default: a LocalCluster)")
    dask_workers: int = Field(2, ge=1, le=256, description="worker processes of the LocalCluster")
    series_per_partition: int = Field(8192, ge=1, description="series per partition (whole compiled chunks)")
    partition_retries: int = Field(2, ge=0, le=10, description="retries of a failed partition")

    @model_validator(mode="after")
    def _address_means_dask(self) -> FanOutConfig:
        if self.dask_address is not None and self.engine != "dask":
            raise ValueError("dask_address is given but engine is 'in-process': set engine to 'dask'")
        return self


class SeriesBlocksConfig(BaseModel):
    """A panel larger than memory: read, validate and encode it a few stores at a time into series blocks on
    disk, and fit from them, a pool of blocks at a time (``tasks.data.panel_blocks``, ``tasks.model.panel_stream``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    block_size: int = Field(256, ge=1, description="series per block on disk")
    stores_per_part: int = Field(1, ge=1, description="stores read, validated and encoded at a time")
    blocks_per_pool: int = Field(32, ge=1, description="blocks a chunk of fit steps draws its series from")
    directory: Path | None = Field(None, description="where to write the blocks (default: a temporary folder, removed after the fit)")


class PanelRunConfig(BaseModel):
    """The main job on a dataset spec's data: read, validate, encode, fit, forecast series and aggregates, export."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: Path = Field(description="dataset spec (YAML); `bhm spec NAME` prints a built-in one")
    data: Path = Field(description="folder holding the files the spec names")
    future: Path = Field(description="future table: the keys and periods to forecast, with their known covariates")
    out: ParquetFile = Field(description="forecast Parquet file to write")
    seed: int = Field(0, ge=0, description="seed of the JAX random key; same seed and data give the same forecast")
    state_dir: Path | None = Field(None, description="where to write the fitted model (default: next to --out)")
    fit: PanelFitConfig = PanelFitConfig()
    series_blocks: SeriesBlocksConfig | None = Field(None, description="fit from series blocks on disk (None: the history in memory)")
    forecast: ForecastConfig = ForecastConfig()
    fan_out: FanOutConfig = FanOutConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def fitted_dir(self) -> Path:
        return self.state_dir or model_dir_beside(self.out)


class PanelTrainConfig(BaseModel):
    """Fit a dataset spec's panel on its history and save the fitted model; no forecast."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: Path = Field(description="dataset spec (YAML); `bhm spec NAME` prints a built-in one")
    data: Path = Field(description="folder holding the files the spec names")
    state_dir: Path = Field(description="folder to write the fitted model to")
    seed: int = Field(0, ge=0, description="seed of the JAX random key")
    fit: PanelFitConfig = PanelFitConfig()
    series_blocks: SeriesBlocksConfig | None = Field(None, description="fit from series blocks on disk (None: the history in memory)")
    tracking: TrackingConfig = TrackingConfig()


class PanelForecastConfig(BaseModel):
    """Forecast a future table (series and aggregates) with a saved panel model, from the end of the history it was fitted on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: Path = Field(description="dataset spec (YAML): the model's own, or one with the same keys and covariates")
    data: Path = Field(description="folder holding the files the spec names")
    future: Path = Field(description="future table: the keys and periods to forecast, with their known covariates")
    out: ParquetFile = Field(description="forecast Parquet file to write")
    model_dir: Path = Field(description="fitted panel model folder (written by `bhm train --spec` or `bhm run --spec`)")
    seed: int = Field(0, ge=0, description="seed of the JAX random key")
    forecast: ForecastConfig = ForecastConfig()
    fan_out: FanOutConfig = FanOutConfig()
    tracking: TrackingConfig = TrackingConfig()


class ReplenishConfig(BaseModel):
    """Order for every series of a future table: a saved panel model's joint draws of demand over each
    order's protection interval (lead time + review period), and the spec's inventory section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: Path = Field(description="dataset spec (YAML) with an inventory section")
    data: Path = Field(description="folder holding the files the spec names (the inventory file among them)")
    future: Path = Field(description="future table: the keys and periods to forecast (it must cover lead time + review period)")
    out: ParquetFile = Field(description="orders Parquet file to write")
    model_dir: Path = Field(description="fitted panel model folder (written by `bhm train --spec` or `bhm run --spec`)")
    seed: int = Field(0, ge=0, description="seed of the JAX random key")
    forecast: ForecastConfig = ForecastConfig()
    fan_out: FanOutConfig = FanOutConfig()
    tracking: TrackingConfig = TrackingConfig()


PanelBaselineName = Literal["seasonal_naive", "ets", "lightgbm_quantile", "loglog_price_regression"]
PANEL_BASELINE_NAMES: tuple[str, ...] = get_args(PanelBaselineName)


class PanelBacktestConfig(BaseModel):
    """The panel backtest: fit before each origin, forecast the horizon, score the model and baselines at every level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: Path = Field(description="dataset spec (YAML)")
    data: Path = Field(description="folder holding the files the spec names")
    origins: tuple[dt.date, ...] = Field((), description="first forecast period of each backtest (default: n_origins over the last year)")
    n_origins: int = Field(4, ge=1, le=52, description="origins spread over the history's last year when none are given")
    horizon: int | None = Field(None, ge=1, le=366, description="periods forecast after each origin (default: 13 weeks, 28 days)")
    baselines: tuple[PanelBaselineName, ...] = Field(PANEL_BASELINE_NAMES, description="baselines scored on the same rows")
    out_dir: Path | None = Field(None, description="folder for the scores (Parquet) and their table (markdown)")
    seed: int = Field(0, ge=0, description="seed of the JAX random keys (one per origin, folded in)")
    fit: PanelFitConfig = PanelFitConfig()
    forecast: ForecastConfig = ForecastConfig()
    fan_out: FanOutConfig = Field(FanOutConfig(), description="where the origins run (each origin's forecast runs with it)")
    tracking: TrackingConfig = TrackingConfig()
