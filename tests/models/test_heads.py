"""Heads: pooling, classification / regression, projection and NT-Xent."""

from __future__ import annotations

import pytest
import torch

from swiftlib.models import ClassifierHead, NTXentLoss, ProjectionHead, RegressionHead, nt_xent_loss
from swiftlib.models.heads import global_pool


def test_global_pool_and_classifier():
    x = torch.randn(2, 8, 2, 3, 4, 5)
    torch.testing.assert_close(global_pool(x), x.mean(dim=(2, 3, 4, 5)))
    with pytest.raises(ValueError, match="expects features"):
        global_pool(torch.randn(4))
    head = ClassifierHead(8, 3)
    assert head(x).shape == (2, 3)
    assert head(x, pre_logits=True).shape == (2, 8)
    assert head(global_pool(x)).shape == (2, 3)
    head.reset(0)
    torch.testing.assert_close(head(x), global_pool(x))
    with pytest.raises(ValueError, match=r"num_classes \(-1\) must be ≥ 0"):
        ClassifierHead(8, -1)
    with pytest.raises(ValueError, match=r"num_classes \(-2\) must be ≥ 0"):
        head.reset(-2)


def test_regression_head():
    head = RegressionHead(8, 2)
    assert head(torch.randn(3, 8, 2, 2, 2, 2)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"num_targets \(0\) must be ≥ 1"):
        RegressionHead(8, 0)


def test_projection_head():
    proj = ProjectionHead(8, 16, 4)
    assert proj(torch.randn(3, 8, 2, 2, 2, 2)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"out_dim \(0\) must be ≥ 1"):
        ProjectionHead(8, 16, 0)


def test_nt_xent():
    z = torch.randn(6, 16)
    aligned = nt_xent_loss(z, z + 0.01 * torch.randn_like(z))
    random = nt_xent_loss(z, torch.randn(6, 16))
    assert aligned < random
    torch.testing.assert_close(nt_xent_loss(z, z * 2), nt_xent_loss(z * 2, z))
    # a uniform-similarity batch gives log(2B - 1)
    same = torch.ones(4, 3)
    torch.testing.assert_close(nt_xent_loss(same, same), torch.log(torch.tensor(7.0)))
    loss_mod = NTXentLoss(temperature=0.5)
    torch.testing.assert_close(loss_mod(z, z), nt_xent_loss(z, z, 0.5))
    z1 = torch.randn(4, 8, requires_grad=True)
    nt_xent_loss(z1, torch.randn(4, 8)).backward()
    assert torch.isfinite(z1.grad).all()


@pytest.mark.parametrize(
    "z1,z2,t,message",
    [
        (torch.randn(4, 8), torch.randn(4, 7), 0.1, "two \\(B, E\\) tensors of the same shape"),
        (torch.randn(1, 8), torch.randn(1, 8), 0.1, "batch of at least 2"),
        (torch.randn(4, 8), torch.randn(4, 8), 0.0, r"temperature \(0.0\) must be > 0"),
    ],
)
def test_nt_xent_validation(z1, z2, t, message):
    with pytest.raises(ValueError, match=message):
        nt_xent_loss(z1, z2, t)


def test_nt_xent_module_validation():
    with pytest.raises(ValueError, match=r"temperature \(-1\) must be > 0"):
        NTXentLoss(-1)
