"""Checkpoints made by the real libraries' own save code (session-scoped, tiny models, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lightning_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trainer.save_checkpoint`` after two steps of LitTiny (10 classes, AdamW + StepLR)."""
    from container_zoo import make_lightning_checkpoint

    return make_lightning_checkpoint(tmp_path_factory.mktemp("lightning"))


@pytest.fixture(scope="session")
def lightning_ema_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with Lightning's EMAWeightAveraging callback (average in state_dict, weights beside it)."""
    from container_zoo import make_lightning_checkpoint

    return make_lightning_checkpoint(tmp_path_factory.mktemp("lightning_ema"), ema=True)


@pytest.fixture(scope="session")
def timm_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's CheckpointSaver file: state_dict, state_dict_ema (ModelEmaV3), optimizer, args."""
    from container_zoo import make_timm_checkpoint

    return make_timm_checkpoint(tmp_path_factory.mktemp("timm"))


@pytest.fixture(scope="session")
def torchvision_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision reference-script layout: model, optimizer, lr_scheduler, epoch, args, model_ema."""
    from container_zoo import make_torchvision_checkpoint

    return make_torchvision_checkpoint(tmp_path_factory.mktemp("torchvision"))
