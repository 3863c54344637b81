"""A small convolutional network for tiny images (digits are 1×8×8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from models.classifier import Classifier


class SmallCNN(Classifier):
    """Two 3×3 convolutions, one 2×2 max-pool, then a linear classifier."""

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        channels: int = 16,
        dropout: float = 0.1,
        **optimizer: Any,
    ) -> None:
        super().__init__(**optimizer)
        self.save_hyperparameters()
        in_channels, height, width = (int(v) for v in image_shape)
        self.net = nn.Sequential(
            nn.Unflatten(1, (in_channels, height, width)),
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * (height // 2) * (width // 2), num_classes),
        )
