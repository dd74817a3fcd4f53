"""Tiny models for container tests: a user net, its Lightning module, and a net whose edit breaks the forward.

Importable by name (tests/core is on pytest's pythonpath), so ``container_zoo:tiny_net`` is a spec and
``LitTiny.load_from_checkpoint`` finds its class.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(nn.Module):
    """Conv + BatchNorm body, a Linear classifier ``fc``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def tiny_net(num_classes: int = 10) -> TinyNet:
    """The spec ``container_zoo:tiny_net``."""
    return TinyNet(num_classes)


class HeadFeedsLayer(nn.Module):
    """The classifier's output feeds another layer: changing its class count breaks the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.fc = nn.Linear(16, 10)
        self.calibrate = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.calibrate(self.fc(torch.relu(self.body(x))))


class LitTiny(L.LightningModule):
    """A Lightning module around TinyNet: hyper-parameters saved, AdamW + StepLR."""

    def __init__(self, num_classes: int = 10, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyNet(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> dict:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1)}

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 3, 8, 8, generator=g)
        y = torch.randint(0, self.hparams.num_classes, (8,), generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=4)


def lightning_trainer(root: str, max_steps: int, callbacks: list | None = None) -> L.Trainer:
    """A quiet CPU trainer: no logger, no progress bar, no checkpoint callback."""
    return L.Trainer(
        default_root_dir=root, max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=callbacks or [],
    )  # fmt: skip
