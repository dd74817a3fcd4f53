"""Checkpoints written by the real libraries' own save code (Lightning, timm, torchvision-reference style,
DDP, torch.compile), made once per session, tiny and on CPU."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


@dataclass
class Made:
    """A checkpoint file and the weights its model had when saved (to check what was opened)."""

    path: Path
    state: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None


@pytest.fixture(scope="session")
def lit_module_dir():
    """The test LightningModules importable as ``lit_classifiers`` (like a user's project)."""
    sys.path.insert(0, str(HERE))
    yield HERE
    sys.path.remove(str(HERE))


def _fit(module, root: Path) -> Path:
    """One training step with Lightning's Trainer, then its own save_checkpoint."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    classes = module.hparams.num_classes
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, classes, (4,)))
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    trainer.fit(module, DataLoader(data, batch_size=2))
    path = root / f"{type(module).__name__}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def lightning_timm_ckpt(tmp_path_factory, lit_module_dir) -> Made:
    """Trainer.fit .ckpt of a module whose hyper_parameters name a timm model (resnet10t, 4 classes)."""
    from lit_classifiers import LitTimmClassifier

    module = LitTimmClassifier("resnet10t", num_classes=4)
    path = _fit(module, tmp_path_factory.mktemp("lightning"))
    return Made(path, {k: v.clone() for k, v in module.model.state_dict().items()})


@pytest.fixture(scope="session")
def lightning_own_ckpt(tmp_path_factory, lit_module_dir) -> Made:
    """Trainer.fit .ckpt of a project's own network (only its class can build it: 3 classes, width 8)."""
    from lit_classifiers import LitSmallNet

    module = LitSmallNet(num_classes=3, width=8)
    path = _fit(module, tmp_path_factory.mktemp("lightning-own"))
    return Made(path, {k: v.clone() for k, v in module.state_dict().items()})


def _timm_saver(root: Path, args: argparse.Namespace | None) -> Made:
    """timm's CheckpointSaver output with an EMA copy (ModelEmaV3) that differs from the main weights."""
    import timm
    from timm.utils import CheckpointSaver, ModelEmaV3

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=5)
    ema = ModelEmaV3(model, decay=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    ema.update(model)  # decay 0.9: the EMA copy differs from the main weights
    saver = CheckpointSaver(
        model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(root), recovery_dir=str(root)
    )
    saver.save_checkpoint(epoch=0, metric=0.5)
    main = {k: v.clone() for k, v in model.state_dict().items()}
    return Made(root / "last.pth.tar", main, {k: v.clone() for k, v in ema.module.state_dict().items()})


@pytest.fixture(scope="session")
def timm_saver_ckpt(tmp_path_factory) -> Made:
    """timm train.py-style: args (model, num_classes) saved with the weights and their EMA."""
    args = argparse.Namespace(model="convnext_atto", num_classes=5, in_chans=None, lr=0.1, epochs=1)
    return _timm_saver(tmp_path_factory.mktemp("timm"), args)


@pytest.fixture(scope="session")
def timm_saver_no_args_ckpt(tmp_path_factory) -> Made:
    """CheckpointSaver without args: 'arch' is only the model class name ('convnext')."""
    return _timm_saver(tmp_path_factory.mktemp("timm-noargs"), None)


@pytest.fixture(scope="session")
def torchvision_reference_ckpt(tmp_path_factory) -> Made:
    """What torchvision's references/classification/train.py saves: model, optimizer, lr_scheduler,
    epoch, args (args.model; the class count only in the weights) and model_ema (--model-ema)."""
    import torchvision
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30)
    model_ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    model_ema.update_parameters(model)
    args = argparse.Namespace(model="mobilenet_v3_small", lr=0.1, epochs=1, model_ema=True, weights=None)
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": 0,
        "args": args,
        "model_ema": model_ema.state_dict(),
    }
    path = tmp_path_factory.mktemp("tvref") / "checkpoint.pth"
    torch.save(checkpoint, path)
    ema = {k.removeprefix("module."): v for k, v in model_ema.state_dict().items() if k != "n_averaged"}
    return Made(path, {k: v.clone() for k, v in model.state_dict().items()}, ema)


@pytest.fixture(scope="session")
def ddp_state_pth(tmp_path_factory) -> Made:
    """A DistributedDataParallel model's state_dict (keys 'module.'), from a real 1-process gloo group."""
    import torch.distributed as dist
    import torchvision
    from torch.nn.parallel import DistributedDataParallel

    root = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=5)
    dist.init_process_group("gloo", init_method=f"file://{root / 'store'}", rank=0, world_size=1)
    try:
        state = DistributedDataParallel(model).state_dict()
    finally:
        dist.destroy_process_group()
    torch.save(state, root / "weights.pth")
    return Made(root / "weights.pth", {k: v.clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="session")
def compiled_state_pth(tmp_path_factory) -> Made:
    """A torch.compile'd model's state_dict (keys '_orig_mod.'), saved plainly."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=7)
    state = torch.compile(model).state_dict()
    path = tmp_path_factory.mktemp("compiled") / "weights.pth"
    torch.save(state, path)
    return Made(path, {k: v.clone() for k, v in model.state_dict().items()})
