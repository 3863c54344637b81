"""The template's MNISTDataModule shape (data_dir, train_val_test_split, batch_size), on
scikit-learn's digits so that nothing downloads."""

import torch
from lightning import LightningDataModule
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset, random_split


class DigitsDataModule(LightningDataModule):
    def __init__(
        self,
        data_dir: str = "data/",
        train_val_test_split: tuple[int, int, int] = (1200, 300, 297),
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_train = self.data_val = self.data_test = None

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        x, y = load_digits(return_X_y=True)
        dataset = TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))
        self.data_train, self.data_val, self.data_test = random_split(
            dataset,
            lengths=list(self.hparams.train_val_test_split),
            generator=torch.Generator().manual_seed(42),
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data_train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data_val, batch_size=self.hparams.batch_size)
