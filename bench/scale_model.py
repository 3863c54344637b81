"""The trivial trial of the scale benchmark: one parameter, one batch of one example.

Training costs nothing, so what a sweep of these measures is everything around training:
starting trials, reporting, checkpointing, the driver's bookkeeping and MLflow logging.
Like models/, this imports neither ray nor sweep.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Trivial(L.LightningModule):
    """``val_acc`` is a smooth function of ``lr``, so searchers and ASHA see a signal."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss = ((self.weight - x) ** 2).mean()
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        lr = torch.tensor(float(self.hparams["lr"]))
        self.log("val_acc", 1.0 - (torch.log10(lr) + 2.0) ** 2 / 10.0, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=float(self.hparams["lr"]))


class OneBatch(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.data = TensorDataset(torch.ones(1, 1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=1)
