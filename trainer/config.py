"""The training run's hyperparameters and options, with their defaults, importing neither Keras nor
TensorFlow: `python -m trainer --help` shows these defaults without loading either."""
from __future__ import annotations

import dataclasses

DEFAULT_FILTERS = (16, 32, 48, 64, 96, 128)
"""Filters of the stride-2 convolution blocks of `model.build_model`."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and run options; the defaults train the demo set in a few minutes on 2 cores."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42
    val_fraction: float = 0.2
    patience: int = 8
    filters: tuple[int, ...] = DEFAULT_FILTERS
    kernel_size: int = 7
    dropout: float = 0.3
    threshold_criterion: str = "youden"
    deterministic: bool = True
