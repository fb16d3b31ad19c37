"""Input checks shared by the losses, so a wrong shape fails with one readable sentence."""

from __future__ import annotations

from torch import Tensor


def check_pair(a: Tensor, b: Tensor, what: str, dims: str = "B x d") -> None:
    """Refuse anything but two 2-D tensors of one shape."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{what} needs two {dims} tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_slice(local_slice: slice, batch: int) -> None:
    """Refuse row slices that are strided, empty or outside the global batch."""
    if not isinstance(local_slice, slice) or local_slice.step not in (None, 1):
        raise ValueError(f"local_slice must be a contiguous slice, got {local_slice!r}")
    start = 0 if local_slice.start is None else local_slice.start
    stop = batch if local_slice.stop is None else local_slice.stop
    if not 0 <= start < stop <= batch:
        raise ValueError(f"local_slice {local_slice!r} selects no rows inside the global batch of {batch}")
