"""One training step of each family for the DDP tests (tests/test_ddp.py): a tiny model, its criterion (the
family's published loss), a batch of 4 images with 2, 0, 3 and 0 objects (a rank of 2 taking every other image
sees none). Deterministic, so that 2 ranks on halves can be compared with one process on the whole batch: batch
norms use their running statistics (CPU DDP has no synchronised batch norm) and denoising adds no noise."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml
from conftest import TINY_CONFIG, TINY_DFINE_CONFIG, TINY_VIT_CONFIG
from torch import nn

from detr_toolkit.config import load_model_config
from detr_toolkit.loss import build_criterion
from detr_toolkit.nn import build_model

FAMILIES = ("rtdetr", "dfine", "deimv2", "lwdetr")  # varifocal; + FGL/DDF; MAL with union matching; IA-BCE, groups
COUNTS = (2, 0, 3, 0)


def family_config(family: str, folder: Path) -> dict:
    if family == "rtdetr":
        config = copy.deepcopy(TINY_CONFIG)
    elif family == "lwdetr":
        config = {**copy.deepcopy(TINY_VIT_CONFIG), "loss": load_model_config("rfdetr-nano.yaml")["loss"]}
    else:
        (folder / "tiny-dfine.yaml").write_text(yaml.safe_dump(TINY_DFINE_CONFIG))
        config = load_model_config(folder / "tiny-dfine.yaml")
        if family == "deimv2":
            config["loss"] = load_model_config("deimv2-n.yaml")["loss"]
    config.pop("names", None)
    if family != "lwdetr":
        config["decoder"].update(label_noise_ratio=0.0, box_noise_scale=0.0)
    return config


def step_inputs(family: str, folder: Path):
    """-> (model in training mode with batch norms frozen, criterion, images (4, 3, 64, 64), targets)."""
    config = family_config(family, folder)
    torch.manual_seed(0)
    model = build_model(config).train()
    with torch.no_grad():
        for parameter in model.parameters():  # zero-initialised heads would leave the layers before them untrained
            parameter.add_(torch.randn_like(parameter) * 0.01)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    criterion = build_criterion(config.get("loss"), config["nc"])
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(len(COUNTS), 3, 64, 64, generator=generator)
    targets = []
    for count in COUNTS:
        centres = torch.rand(count, 2, generator=generator) * 0.6 + 0.2
        sizes = torch.rand(count, 2, generator=generator) * 0.2 + 0.1
        labels = torch.randint(0, config["nc"], (count,), generator=generator)
        targets.append({"boxes": torch.cat([centres, sizes], 1), "labels": labels})
    return model, criterion, images, targets


def step(model: nn.Module, criterion: nn.Module, images: torch.Tensor, targets: list) -> dict[str, torch.Tensor]:
    """The loss terms of one forward pass; their sum is backpropagated."""
    losses = criterion(model(images, targets), targets)
    sum(losses.values()).backward()
    return {name: value.detach() for name, value in losses.items()}
