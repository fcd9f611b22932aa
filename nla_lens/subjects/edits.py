"""One edit type for every framework: change the residual output of a block at chosen positions.

A :class:`ResidualEdit` says *what* to change (``fn`` on the residual of block
``layer``) and *where* (``positions`` in the one positions model of
:mod:`nla_lens.subjects.positions`: an index over each row's real tokens,
negative counting back from its last real token). The subject adapter binds it
to the batch's attention mask and installs it natively: a Hugging Face forward
hook, a TransformerLens hook on ``blocks.L.hook_resid_post``, or an assignment
to ``layers[L].output`` inside an nnsight trace. So a padded batch is edited at
each row's own tokens, never at a pad column, whatever the padding side.

An edit is also a one-key mapping, ``{"edits": (edit,)}``, so the notebook idiom
``nla.explain_run(model, prompt, **add_direction(...))`` keeps working; several
edits combine with :func:`merge_edits`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import CaptureError
from .positions import Positions, resolve_positions

__all__ = [
    "BoundEdit",
    "EditFn",
    "Edits",
    "ResidualEdit",
    "as_edits",
    "by_layer",
    "merge_edits",
    "residual_edit",
]

#: ``fn(selected) -> replacement`` on ``[batch, n_positions, d_model]`` (or the whole
#: ``[batch, seq, d_model]`` residual when the edit's positions are None).
EditFn = Callable[[Tensor], Tensor]
#: An edit bound to one batch: the block it edits and the tensor-level function.
BoundEdit = tuple[int, Callable[[Tensor], Tensor]]


class Edits(Mapping[str, Any]):
    """A sequence of edits that unpacks as ``**edits`` into ``edits=(...)``."""

    def __init__(self, edits: Sequence[ResidualEdit]) -> None:
        self.edits: tuple[ResidualEdit, ...] = tuple(edits)

    def __getitem__(self, key: str) -> Any:
        if key != "edits":
            raise KeyError(key)
        return self.edits

    def __iter__(self) -> Iterator[str]:
        return iter(("edits",))

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"Edits({list(self.edits)!r})"

    # identity, not Mapping's item-wise equality (an edit's item holds the edit itself)
    __eq__ = object.__eq__
    __hash__ = object.__hash__


@dataclass(frozen=True, eq=False)
class ResidualEdit(Edits):
    """Replace the residual output of block ``layer`` at ``positions`` by ``fn(selected)``.

    ``positions=None`` edits every column (pads included; pads never reach a
    real token's result), as steering during generation needs.
    """

    layer: int
    fn: EditFn
    positions: Positions = None

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise CaptureError(
                f"an edit's layer must be an int (a block index), got {self.layer!r}"
            )
        object.__setattr__(self, "edits", (self,))

    def bind(self, attention_mask: Tensor | None) -> BoundEdit:
        """The edit for one batch: ``(layer, residual [batch, seq, d] -> residual)``."""
        if self.positions is None:
            return self.layer, self.fn
        if attention_mask is None:
            raise CaptureError(
                "this edit names positions, which need the batch's attention mask; "
                "use positions=None to edit every position during generation."
            )
        cols = resolve_positions(attention_mask, self.positions)
        rows = torch.arange(cols.shape[0]).unsqueeze(1)
        fn = self.fn

        def apply(resid: Tensor) -> Tensor:
            r, c = rows.to(resid.device), cols.to(resid.device)
            new = fn(resid[r, c])
            out = resid.clone()
            out[r, c] = new.to(out.dtype)
            return out

        return self.layer, apply


def by_layer(edits: Sequence[BoundEdit]) -> list[BoundEdit]:
    """Bound edits grouped per block, in block order, each group composed in the given order."""
    groups: dict[int, list[Callable[[Tensor], Tensor]]] = {}
    for layer, fn in edits:
        groups.setdefault(layer, []).append(fn)

    def compose(fns: list[Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
        def run(resid: Tensor) -> Tensor:
            for f in fns:
                resid = f(resid)
            return resid

        return run

    return [(layer, compose(groups[layer])) for layer in sorted(groups)]


def residual_edit(layer: int, fn: EditFn, positions: Positions = None) -> ResidualEdit:
    """An edit of block ``layer``'s residual output: ``fn`` on ``positions`` (None = all)."""
    return ResidualEdit(layer, fn, positions)


def merge_edits(edits: Sequence[Mapping[str, Any]]) -> Edits:
    """Combine several edits (each an edit or an ``Edits``), applied in order."""
    out: list[ResidualEdit] = []
    for e in edits:
        if not isinstance(e, Mapping) or set(e) != {"edits"}:
            raise CaptureError(f"merge_edits takes edits (e.g. from add_direction), got {e!r}")
        out.extend(e["edits"])
    return Edits(out)


def as_edits(edits: Any) -> tuple[ResidualEdit, ...]:
    """Normalise what a user passes as ``edits=``: an edit, an Edits, or a sequence of them."""
    if edits is None:
        return ()
    if isinstance(edits, Edits):
        return edits.edits
    if isinstance(edits, Sequence) and not isinstance(edits, (str, bytes)):
        out: list[ResidualEdit] = []
        for e in edits:
            out.extend(as_edits(e))
        return tuple(out)
    raise CaptureError(
        f"edits must be a ResidualEdit (e.g. from add_direction or residual_edit) or a "
        f"sequence of them, got {type(edits).__name__}"
    )
