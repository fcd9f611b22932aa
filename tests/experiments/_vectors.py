"""Toy vectors whose sampled explanations agree (real residuals) or disagree (mixtures
of two residuals' directions, random vectors) at temperature 1."""

from __future__ import annotations

import torch


def agreeing_and_disagreeing(toy_residuals):
    v, _ = toy_residuals
    g = torch.Generator().manual_seed(7)
    unit = v / v.norm(dim=1, keepdim=True)
    mixes = torch.stack([unit[i] + unit[i + 1] for i in range(0, 16, 2)])
    noise = torch.randn(8, v.shape[1], generator=g)
    return v[:8], torch.cat([mixes, noise])
