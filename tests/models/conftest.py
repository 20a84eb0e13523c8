"""Fixtures for the model tests: seeded generators and input volumes for any preset."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed, and run the tiny test models on one thread (faster than two for these sizes,
    and robust when other jobs share the cores); the previous setting is restored."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def input_for(
    model: torch.nn.Module,
    batch_size: int = 2,
    generator: torch.Generator | None = None,
    **shape_overrides: int,
) -> torch.Tensor:
    """A random volume batch ``(B, C, D, H, W, T)`` of the size the model was built for."""
    enc = getattr(model, "encoder", model)
    D, H, W, T = enc.img_size
    dims = {"D": D, "H": H, "W": W, "T": T, **shape_overrides}
    C = enc.patch_embed.in_chans
    return torch.randn(
        batch_size, C, dims["D"], dims["H"], dims["W"], dims["T"], generator=generator
    )


@pytest.fixture
def make_input():
    return input_for
