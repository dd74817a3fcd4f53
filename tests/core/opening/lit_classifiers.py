"""Tiny LightningModules as projects write them, for checkpoints made by ``Trainer.fit`` in the tests."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn


class _Tiny(pl.LightningModule):
    """Shared training step: cross-entropy on whatever batch the test gives, SGD."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class LitTimmClassifier(_Tiny):
    """A timm backbone named in the hyper-parameters (the common fine-tuning module)."""

    def __init__(self, model_name: str = "resnet10t", num_classes: int = 4, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        import timm

        self.model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        self.criterion = nn.CrossEntropyLoss(weight=torch.ones(num_classes))


class LitSmallNet(_Tiny):
    """The project's own network: only this class can build it (no hint names a known architecture)."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )
