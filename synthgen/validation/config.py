"""The typed config of ``synthgen validate`` and ``synthgen adapt`` (kind ``validate``: cpu, gpu, tiny profiles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import (
    require_above_zero,
    require_choice,
    require_non_negative,
    require_open_unit,
    require_positive,
)
from synthgen.errors import ConfigError, allowed

TASKS = ("seg", "height")
LR_SCHEDULES = {"cosine": "cosine", "constant": "constant_with_warmup"}  # name -> diffusers' get_scheduler name


@dataclass
class ValidateConfig:
    """Everything a validation run depends on; see ``synthgen/configs/validate/*.yaml``.

    Sets are ``NAME=<manifest>[:split][,<manifest>[:split]...]``. A train set takes the manifest's ``train`` split
    when it has one and a test set its ``val`` split (``:all`` for every tile). ``scheme`` is the common class
    scheme (default: the sets' own when they share one, else ``oem8``). ``steps`` are optimizer steps per model;
    ``crop`` px random crops for training, whole tiles for testing. ``real_fraction`` adds the mixing experiment:
    the first train set (or ``real_set``) cut to each share alone, and with every other train set added.
    ``source`` / ``target`` / ``adapt_*`` are the settings of ``synthgen adapt`` (mean-teacher self-training).
    ``seeds``: one model per seed for every run (mean ± sd in the report); empty means ``[seed]``.
    ``lr_schedule``: ``cosine`` (decays to 0) or ``constant`` (after warm-up: a flat last fifth of the validation
    loss then means the model converged, not that the learning rate ran out). ``monitor_every`` > 0 records the
    loss on ``monitor_tiles`` tiles of the first test set every that many steps; the report says whether it was
    flat (within ``plateau_tolerance``, relative) over the last fifth of the steps. The curve is only reported: the
    model tested is always the last step's. ``weights_ema`` > 0: the model monitored and tested holds an exponential
    moving average of the weights with that decay (diffusers' ``EMAModel``), which smooths the step-to-step noise
    of a constant learning rate. ``mix_sets``: the synthetic train sets the mixing experiment adds, each
    on its own (empty: all of them together).
    ``cpu_threads`` caps torch's CPU threads (None: torch's default); on a machine shared with other jobs one
    thread per process avoids the slowdown of oversubscribed thread pools.
    ``paper_*``: the published study (``--paper``): the real manifest, and how many of its train / val label tiles
    condition the generated sets (all when None); ``paper_filter``: the threshold of the label-consistency filter
    (the embedded model) that adds, per generated-label set, its filtered tiles and a random subset of the same
    size as training sets (None: neither).
    """

    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    arch: list[str] = field(default_factory=lambda: ["unet", "unetplusplus", "deeplabv3plus"])
    task: list[str] = field(default_factory=lambda: ["seg"])
    scheme: str | None = None
    real_fraction: list[float] = field(default_factory=list)
    real_set: str | None = None
    encoder: str = "tu-mobilenetv3_small_100"
    encoder_depth: int = 5
    encoder_weights: str | None = None
    decoder_channels: list[int] | None = None
    crop: int = 128
    batch_size: int = 8
    steps: int = 200
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    weights_ema: float = 0.0
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    gradient_accumulation_steps: int = 1
    height_weight: float = 1.0
    height_scale: float = 10.0
    jitter: float = 0.2
    num_workers: int = 0
    cpu_threads: int | None = None
    checkpoint_every: int = 100
    checkpoints_total_limit: int = 2
    eval_batch_size: int = 16
    max_test_tiles: int | None = None
    overlays: int = 4
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    monitor_every: int = 0
    monitor_tiles: int = 64
    plateau_tolerance: float = 0.02
    mix_sets: list[str] = field(default_factory=list)
    source: str | None = None
    target: str | None = None
    adapt_steps: int = 200
    pseudo_threshold: float = 0.95
    ema_decay: float = 0.99
    unsupervised_weight: float = 1.0
    classmix: bool = True
    strong_jitter: float = 0.4
    paper_real: str = "manifests/dubai128.parquet"
    paper_train_tiles: int | None = None
    paper_val_tiles: int | None = None
    paper_filter: float | None = None
    out: str = "runs/validate"

    def __post_init__(self):
        unknown = sorted(set(self.task) - set(TASKS))
        if unknown or not self.task:
            raise ConfigError(f"task '{','.join(self.task)}': unknown or empty (allowed: {allowed(TASKS)})")
        require_positive(
            self, ("steps", "batch_size", "crop", "eval_batch_size", "gradient_accumulation_steps", "encoder_depth")
        )
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"config 'cpu_threads': {self.cpu_threads} must be >= 1 (or null for torch's default)")
        require_non_negative(self, ("adapt_steps", "overlays", "num_workers", "warmup_steps", "monitor_every"))
        require_positive(self, ("monitor_tiles",))
        if not 0 <= self.weights_ema < 1:
            raise ConfigError(f"config 'weights_ema': {self.weights_ema} must be in [0, 1) (0: no weight average)")
        require_choice(self, "lr_schedule", LR_SCHEDULES)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"config 'seeds': {self.seeds} repeats a seed (each seed trains its own models)")
        for f in self.real_fraction:
            if not 0 < f <= 1:
                raise ConfigError(f"real fraction {f} must be in (0, 1]")
        require_open_unit(self, ("pseudo_threshold", "ema_decay", "plateau_tolerance"))
        require_above_zero(self, ("height_scale",), unit="metres")
        if not self.arch:
            raise ConfigError("config 'arch': give at least one architecture")
        if self.paper_filter is not None and not 0 <= self.paper_filter <= 1:
            raise ConfigError(
                f"config 'paper_filter': {self.paper_filter} must be in [0, 1] (or null: no filtered sets)"
            )

    @property
    def run_seeds(self) -> list[int]:
        """The seeds every run is trained with: ``seeds``, or ``[seed]`` when it is empty."""
        return list(self.seeds) or [self.seed]

    @property
    def with_height(self) -> bool:
        """True when the height task is on."""
        return "height" in self.task

    @property
    def with_seg(self) -> bool:
        """True when the segmentation task is on."""
        return "seg" in self.task

    @property
    def out_dir(self) -> Path:
        """Folder of the report, plots and model runs."""
        return Path(self.out)
