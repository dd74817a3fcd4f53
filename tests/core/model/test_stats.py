"""What the app shows about a model's numbers: per-block counts, memory, tensor statistics, histograms."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from headstudio.core.model.stats import Block, count_blocks, memory_bytes, tensor_histogram, tensor_stats
from headstudio.core.modules import meta_copy


def test_resnet18_blocks_count_each_top_level_child_and_skip_empty_ones():
    model = torchvision.models.resnet18(weights=None)
    blocks = count_blocks(model)
    assert [b.name for b in blocks] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert blocks[-1] == Block("fc", 513_000, 0)
    assert sum(b.total for b in blocks) == 11_689_512


def test_frozen_parameters_are_counted_apart_and_own_parameters_get_their_own_block():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model.register_parameter("scale", nn.Parameter(torch.ones(5)))
    model[0].requires_grad_(False)
    blocks = {b.name: b for b in count_blocks(model)}
    assert blocks["(own)"] == Block("(own)", 5, 0)
    assert blocks["0"] == Block("0", 0, 15) and blocks["1"].trainable == 8


def test_memory_counts_parameters_and_buffers_by_their_dtype():
    model = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10)).half()
    # 130 half parameters + running mean and var (20 half) + num_batches_tracked (one int64)
    assert memory_bytes(model) == (130 + 20) * 2 + 8


def test_memory_of_a_model_without_loaded_weights_is_none():
    assert memory_bytes(meta_copy(nn.Linear(4, 4))) is None


def test_statistics_match_torch_and_meta_or_single_values_have_none():
    values = torch.arange(4.0)
    assert tensor_stats(values) == pytest.approx((1.5, values.std().item()))
    assert all(math.isnan(v) for v in tensor_stats(torch.empty(10, 4, device="meta")))
    mean, std = tensor_stats(torch.tensor([3.0]))
    assert mean == 3.0 and math.isnan(std)
    assert tensor_stats(torch.ones(2, dtype=torch.float16)) == (1.0, 0.0)


def test_histogram_counts_every_value_between_its_edges():
    torch.manual_seed(0)
    weight = torch.randn(64, 64, 3, 3)
    edges, counts = tensor_histogram(weight, bins=30)
    assert len(edges) == 31 and len(counts) == 30
    assert sum(counts) == weight.numel()
    assert edges[0] == pytest.approx(weight.min().item()) and edges[-1] == pytest.approx(weight.max().item())


def test_histogram_of_equal_values_has_one_full_bin_and_meta_has_none():
    edges, counts = tensor_histogram(torch.full((8,), 2.0), bins=4)
    assert edges[0] < 2.0 < edges[-1] and sorted(counts)[-1] == 8 and sum(counts) == 8
    assert tensor_histogram(torch.empty(3, device="meta")) is None
