"""A captured residual that remembers which of its slots are real tokens.

``nla.capture(model, [short, long])`` reads a padded ``[batch, pos, d]`` batch:
without more, the pad slots look like any other vector and get explained.
:class:`CapturedResidual` is that tensor (a ``torch.Tensor``, usable as one) with
two more attributes, ``mask`` (which slots hold real tokens) and ``positions``
(each slot's index over its row's real tokens), so ``nla.explain`` drops the pads
and labels each vector with its true position.

Like ``torch.nn.Parameter``, any torch operation on it returns a plain tensor:
the mask only travels with the capture itself, ``capture[b]`` (one row) and
``copy.deepcopy``, never with a derived tensor it might not describe. Saved with
``torch.save`` it is saved as the plain tensor (``torch.load`` reads it back as one).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .capture import Captured

__all__ = ["CapturedResidual", "real_positions"]


def real_positions(real: Bool[Tensor, "*batch pos"]) -> Int[Tensor, "*batch pos"]:
    """Each slot's index over its row's real slots (0 = the first real one; -1 at pads)."""
    r = real.bool()
    return torch.where(r, r.long().cumsum(dim=-1) - 1, torch.full_like(r, -1, dtype=torch.long))


class CapturedResidual(Tensor):
    """A ``[batch, pos, d_model]`` (or, for one row, ``[pos, d_model]``) residual with
    ``mask`` (``[batch, pos]`` bool, CPU: True where the slot is a real token, False at
    padding) and ``positions`` (``[batch, pos]``, CPU: the slot's index over its row's
    real tokens, 0 = the first; -1 at padding)."""

    mask: Bool[Tensor, "*batch pos"]
    positions: Int[Tensor, "*batch pos"]

    # Operations give plain tensors (as nn.Parameter's do): a derived tensor's slots
    # need not be the capture's, so it must not inherit the mask.
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @staticmethod
    def wrap(
        values: Float[Tensor, "*batch pos d_model"],
        real: Bool[Tensor, "*batch pos"],
        positions: Int[Tensor, "*batch pos"] | None = None,
    ) -> CapturedResidual:
        """``values`` (shared, not copied) labelled with ``real`` (its ``mask``) and ``positions``."""
        out = values.as_subclass(CapturedResidual)
        out.mask = real.detach().to("cpu", torch.bool)
        out.positions = (
            real_positions(out.mask) if positions is None else positions.detach().cpu().long()
        )
        return out

    @classmethod
    def of(cls, cap: Captured) -> CapturedResidual:
        """The residual of a :class:`Captured`, labelled: with ``positions=None`` every
        column of the padded batch, pads marked; with chosen positions, all real."""
        if cap.residual.shape[:2] == cap.attention_mask.shape and bool(
            (cap.positions == torch.arange(cap.attention_mask.shape[1])).all()
        ):
            return cls.wrap(cap.residual, cap.attention_mask.bool())
        real = torch.ones(cap.positions.shape, dtype=torch.bool)
        return cls.wrap(cap.residual, real, cap.relative)

    def __getitem__(self, index: Any) -> Any:
        plain = self.as_subclass(Tensor)[index]
        if self.ndim == 3 and isinstance(index, int) and not isinstance(index, bool):
            return CapturedResidual.wrap(plain, self.mask[index], self.positions[index])
        return plain

    def __deepcopy__(self, memo: Any) -> CapturedResidual:
        plain = copy.deepcopy(self.as_subclass(Tensor), memo)
        return CapturedResidual.wrap(plain, self.mask.clone(), self.positions.clone())

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Saved (torch.save, pickle) as the plain tensor it is, so torch.load's default
        # weights_only=True reads it back; the mask stays in memory only.
        return self.as_subclass(Tensor).__reduce_ex__(protocol)

    def __repr__(self, **kwargs: Any) -> str:  # type: ignore[override]
        n_real, n = int(self.mask.sum()), self.mask.numel()
        body = repr(self.as_subclass(Tensor))
        return f"CapturedResidual({n_real} real of {n} slots, shape {tuple(self.shape)}): {body}"
