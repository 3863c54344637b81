"""What every DataModule here shares: a seeded, stratified train/validation split of
in-memory arrays, served as tensors.

A DataModule tells the model what shape it needs through ``model_kwargs`` (for example
``num_features`` and ``num_classes``); the sweep passes the ones the model's constructor
accepts, so models never hard-code their data.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset


class ArrayDataModule(L.LightningDataModule):
    """Splits ``(features, labels)`` from :meth:`load_arrays` into train and validation."""

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.batch_size = int(batch_size)
        self.val_fraction = val_fraction
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.num_features = 0
        self.num_classes = 0

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Features as float32 ``(n, d)`` and integer class labels ``(n,)``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = self.load_arrays()
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=self.val_fraction, random_state=self.seed, stratify=y
        )
        self.num_features = int(x.shape[1])
        self.num_classes = int(y.max()) + 1
        self.train_set = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
        self.val_set = TensorDataset(torch.from_numpy(x_val), torch.from_numpy(y_val))

    @property
    def model_kwargs(self) -> dict[str, Any]:
        self.setup()
        return {"num_features": self.num_features, "num_classes": self.num_classes}

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(self.val_set, batch_size=max(self.batch_size, 512))
