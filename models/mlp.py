"""A multi-layer perceptron for flat feature vectors (digits pixels, tabular columns)."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.classifier import Classifier


class MLPClassifier(Classifier):
    """``layers`` hidden layers of ``hidden`` units with ReLU and dropout."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
        **optimizer: Any,
    ) -> None:
        super().__init__(**optimizer)
        self.save_hyperparameters()
        blocks: list[nn.Module] = []
        width = num_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*blocks)
