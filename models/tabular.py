"""Your own table (CSV or Parquet): chosen feature columns, one class-label target.

Features are standardised (zero mean, unit variance over the table);
the target's distinct values become classes 0..k-1 in sorted order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.data import ArrayDataModule


class TabularDataModule(ArrayDataModule):
    def __init__(
        self,
        path: str,
        target: str,
        features: Sequence[str] | None = None,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, seed=seed)
        self.path = Path(path).expanduser()
        self.target = target
        self.features = list(features) if features else None

    def _read(self, header_only: bool = False) -> pd.DataFrame:
        if self.path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(self.path)
        return pd.read_csv(self.path, nrows=0 if header_only else None)

    def check(self) -> None:
        """Fail fast (before any training starts) on a missing file or column."""
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder, not a table file")
        if not self.path.is_file():
            raise FileNotFoundError(f"no such file: {self.path}")
        columns = set(self._read(header_only=True).columns)
        wanted = [self.target, *(self.features or [])]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise KeyError(f"{self.path.name} has no column(s) {missing}; it has {sorted(columns)}")

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self.check()
        frame = self._read()
        features = self.features or [c for c in frame.columns if c != self.target]
        x = frame[features].to_numpy(dtype=np.float32)
        y = pd.Categorical(frame[self.target]).codes.astype(np.int64)
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
        return x.astype(np.float32), y
