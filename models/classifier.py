"""The training loop shared by every classifier here: loss, accuracy, optimizer.

Subclasses only build ``self.net``; metric names (``train_loss``, ``train_acc``,
``val_loss``, ``val_acc``, and the model's size ``param_count``) are logged once per
epoch, which is the unit ASHA counts.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

OPTIMIZERS = ("adam", "adamw", "sgd")


class Classifier(L.LightningModule):
    """Cross-entropy classifier; ``net`` maps a batch of inputs to class logits."""

    net: nn.Module

    def __init__(
        self,
        lr: float = 1e-3,
        optimizer: str = "adam",
        beta1: float = 0.9,
        beta2: float = 0.999,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.lr = lr
        self.optimizer_name = optimizer
        # beta1 is Adam's first-moment decay, and SGD's momentum.
        self.beta1 = beta1
        self.beta2 = beta2
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=-1) == y).float().mean()
        # sync_dist: under DDP (resources.workers>1) each worker sees a shard; the epoch's
        # value is their mean, the same on every worker (one process: a no-op).
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        # The model's size, for a sweep that trades accuracy against it:
        # `sweep metric=[val_acc,param_count] mode=[max,min]`.
        self.log("param_count", float(sum(p.numel() for p in self.parameters())))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.parameters()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.beta1, weight_decay=self.weight_decay
            )
        cls = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return cls(
            params, lr=self.lr, betas=(self.beta1, self.beta2), weight_decay=self.weight_decay
        )
