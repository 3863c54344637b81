"""The Lightning part every hand-written contender shares: the same model class, data
split, seed and Trainer settings as a `sweep` trial, so only the orchestration differs."""

from __future__ import annotations

import json
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class

from models.digits import IMAGE_SHAPE, DigitsDataModule


def load_spec(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def build(spec: dict[str, Any], point: dict[str, Any]) -> tuple[L.LightningModule, Any]:
    L.seed_everything(spec["seed"], workers=True, verbose=False)
    torch.set_num_threads(1)  # one trial per CPU, as the sweep does
    data = DigitsDataModule(**spec["data"])
    data.setup("fit")
    shape = {"num_features": 64, "num_classes": 10}
    if spec["model"] == "cnn":
        shape = {"image_shape": IMAGE_SHAPE, "num_classes": 10}
    model = get_class(spec["target"])(**shape, **spec["fixed"], **point)
    return model, data


def trainer(spec: dict[str, Any], callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_epochs=spec["epochs"],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
