"""scikit-learn's handwritten digits: 1,797 real 8×8 images, shipped inside the package
(no download), split 80/20 stratified."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from models.data import ArrayDataModule

IMAGE_SHAPE = (1, 8, 8)


class DigitsDataModule(ArrayDataModule):
    """Pixels scaled to [0, 1] as 64 features; ``image_shape`` lets a CNN see 8×8."""

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)
        return x, digits.target.astype(np.int64)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs, "image_shape": IMAGE_SHAPE}
