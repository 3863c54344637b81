"""Softmax regression on scikit-learn's wine data (178 wines, 13 features, 3 cultivars)."""

from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class WineData(L.LightningDataModule):
    def __init__(self, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        x, y = load_wine(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=self.seed, stratify=y)
        tensor = lambda a, t: torch.tensor(a, dtype=t)  # noqa: E731
        self.train = TensorDataset(tensor(xt, torch.float32), tensor(yt, torch.long))
        self.val = TensorDataset(tensor(xv, torch.float32), tensor(yv, torch.long))

    @property
    def model_kwargs(self) -> dict[str, int]:
        # The sweep passes these to the model when its constructor names them.
        return {"num_features": 13, "num_classes": 3}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)


class SoftmaxRegression(L.LightningModule):
    def __init__(self, num_features: int, num_classes: int, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.linear = nn.Linear(num_features, num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.linear(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.linear(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)
