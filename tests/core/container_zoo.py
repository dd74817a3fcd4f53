"""Tiny models for container tests: a user net, its Lightning module, and a net whose edit breaks the forward.

Importable by name (tests/core is on pytest's pythonpath), so ``container_zoo:tiny_net`` is a spec and
``LitTiny.load_from_checkpoint`` finds its class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


def make_lightning_checkpoint(folder: Path, ema: bool = False) -> Path:
    """Two steps of ``Trainer.fit`` on LitTiny (10 classes), saved by ``trainer.save_checkpoint``.

    With ``ema`` an EMAWeightAveraging callback (decay 0.5, so the average differs from the weights)
    puts the average in ``state_dict`` and the current weights in ``current_model_state``.
    """
    from lightning.pytorch.callbacks import EMAWeightAveraging

    torch.manual_seed(0)
    path = folder / ("lit_ema.ckpt" if ema else "lit.ckpt")
    callbacks = [EMAWeightAveraging(decay=0.5), SaveAtStep(path, 2)] if ema else []
    trainer = lightning_trainer(str(folder), max_steps=2, callbacks=callbacks)
    trainer.fit(LitTiny())
    if not ema:
        trainer.save_checkpoint(path)
    return path


class SaveAtStep(L.Callback):
    """Saves during training (as ModelCheckpoint does), before the EMA callback's end-of-fit swap."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def make_timm_checkpoint(folder: Path) -> Path:
    """timm's CheckpointSaver output for test_resnet (10 classes): AdamW state, ModelEmaV3, args."""
    import timm
    from timm.utils import CheckpointSaver, ModelEmaV3

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    ema = ModelEmaV3(model, decay=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
        opt.step()
        ema.update(model)
    args = argparse.Namespace(model="test_resnet", num_classes=10, lr=0.01, epochs=3)
    saver = CheckpointSaver(model, opt, args=args, model_ema=ema, checkpoint_dir=str(folder),
                            recovery_dir=str(folder), max_history=1)  # fmt: skip
    saver.save_checkpoint(epoch=0, metric=0.5)
    return folder / "last.pth.tar"


def make_torchvision_checkpoint(folder: Path, momentum: float = 0.9) -> Path:
    """torchvision's reference ``train.py`` layout for mobilenet_v3_small: model, optimizer (SGD),
    lr_scheduler, epoch, args, and model_ema (an AveragedModel, as ``utils.ExponentialMovingAverage``)."""
    import torchvision
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([1, 2])).backward()
        opt.step()
        ema.update_parameters(model)
    sched.step()
    args = argparse.Namespace(model="mobilenet_v3_small", num_classes=10, lr=0.1, epochs=3)
    container = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1, "args": args,
                 "lr_scheduler": sched.state_dict(), "model_ema": ema.state_dict()}  # fmt: skip
    path = folder / ("checkpoint.pth" if momentum else "plain_sgd.pth")
    torch.save(container, path)
    return path
