"""Semantic class ids from logits on the CPU: the argmax over channels, without its slow paths.

``logits.max(1).indices`` on a (B, C, H, W) CPU tensor tracks an index per element along a
strided dimension, and the semantic head's final bilinear upsampling writes every upsampled
logit (16 MB at 38 x 256 x 416) only for the argmax to read them back. ``argmax_ids`` takes the
same first maximum with a few vectorised numpy passes, and ``upsampled_argmax_ids`` upsamples
and takes it a band of rows at a time, so the upsampled logits are never written out whole
(``tools.bench`` times the semantic stage). Both return exactly what the plain
torch code returns (ties go to the first channel; NaN counts as the maximum, as in
``torch.max``).

The banded upsampling repeats torch's bilinear kernel operation for operation (the same source
rows and columns, the same float32 weights, the same fused multiply-adds). Whether this torch
build rounds the same way is checked once per (input size, output size) on random logits; where
it does not (another torch build, other sizes), the plain ``F.interpolate`` runs instead.
"""

import threading
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

#: Bytes of float32 logits per band of output rows (fastest on a 2-core EPYC: smaller bands
#: pay more per-call overhead than they gain in cache hits).
BAND_BYTES = 2 * 1024 * 1024

_exact_sizes: Dict[Tuple[int, int, int, int], bool] = {}
_exact_sizes_lock = threading.Lock()


def argmax_ids(logits: torch.Tensor) -> torch.Tensor:
    """Return ``logits.max(1).indices.to(torch.uint8)``, faster on the CPU.

    Args:
        logits: (B, C, H, W) float logits, C <= 255.

    Returns:
        (B, H, W) uint8 index of the first maximum over C.
    """
    if not _numpy_argmax_applies(logits):
        return logits.max(1).indices.to(torch.uint8)
    ids = torch.empty((logits.shape[0],) + tuple(logits.shape[2:]), dtype=torch.uint8)
    first_max = _FirstMax(logits.shape[1])
    found = all(first_max(sample.numpy(), out.numpy())
                for sample, out in zip(logits.contiguous(), ids))
    return ids if found else logits.max(1).indices.to(torch.uint8)


def upsampled_argmax_ids(logits: torch.Tensor, output_hw: Tuple[int, int]) -> torch.Tensor:
    """Return ``argmax_ids`` of the bilinear upsampling of logits, without materialising it.

    Args:
        logits: (B, C, h, w) float logits at the semantic head's stride, C <= 255.
        output_hw: (H, W) size to upsample to (``F.interpolate``, bilinear,
            ``align_corners=False``), as the semantic head does.

    Returns:
        (B, H, W) uint8, identical to
        ``F.interpolate(logits, output_hw, mode='bilinear').max(1).indices.to(torch.uint8)``.
    """
    height, width = (int(size) for size in output_hw)

    def upsampled() -> torch.Tensor:
        return F.interpolate(logits, size=(height, width), mode='bilinear', align_corners=False)

    if not _numpy_argmax_applies(logits) or not _banded_upsampling_is_exact(
            logits, (height, width)):
        return argmax_ids(upsampled())
    rows = _BilinearTaps(logits.shape[2], height)
    cols = _BilinearTaps(logits.shape[3], width)
    channels = logits.shape[1]
    band_rows = max(1, min(height, BAND_BYTES // (4 * channels * width)))
    first_max = _FirstMax(channels)
    ids = torch.empty((logits.shape[0], height, width), dtype=torch.uint8)
    band_low = torch.empty(channels, band_rows, width)  # (C, rows, W)
    band_high = torch.empty(channels, band_rows, width)
    for sample, sample_ids in zip(logits, ids):
        across = cols.interpolate_columns(sample)  # (C, h, W): each source row, widened
        for start in range(0, height, band_rows):
            stop = min(start + band_rows, height)
            low, high = band_low[:, :stop - start], band_high[:, :stop - start]
            rows.interpolate_rows(across, start, stop, low, high)  # logits in `high`
            if not first_max(high.numpy(), sample_ids[start:stop].numpy()):
                return argmax_ids(upsampled())  # NaN: torch.max's rules
    return ids


def _numpy_argmax_applies(logits: torch.Tensor) -> bool:
    return (logits.device.type == 'cpu' and logits.dim() == 4 and logits.dtype == torch.float32
            and 0 < logits.shape[1] <= 255 and not logits.requires_grad)


class _FirstMax:
    """The index of the first maximum over axis 0 of (C, ...) float arrays, in numpy passes."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        # Channel c scores C - c where it equals the maximum: the largest score is the first c.
        self.scores = np.arange(channels, 0, -1, dtype=np.uint8)

    def __call__(self, logits: np.ndarray, out: np.ndarray) -> bool:
        """Write the first maximum over axis 0 of (C, ...) logits to ``out``; False if NaN."""
        best = logits.max(axis=0)  # NaN where any channel is NaN
        equal = np.equal(logits, best).view(np.uint8)  # (C, ...) 0 / 1
        equal *= self.scores.reshape((-1,) + (1,) * (logits.ndim - 1))
        np.subtract(self.channels, equal.max(axis=0), out=out)
        return not np.any(out == self.channels)  # C: nothing equalled a NaN maximum


class _BilinearTaps:
    """Source indices and float32 weights of torch's bilinear resize along one dimension.

    ``align_corners=False`` and no scale factor: source = max(scale (i + 0.5) - 0.5, 0) with
    scale = in / out in float32, rounded once (torch's kernel contracts it to one fused
    multiply-add); i0 = floor(source) (at most in - 1), i1 = i0 + 1 (at most in - 1),
    w1 = source - i0 clamped to [0, 1], w0 = 1 - w1.
    """

    def __init__(self, size_in: int, size_out: int) -> None:
        scale = np.float64(np.float32(size_in) / np.float32(size_out))
        source = (scale * (np.arange(size_out) + 0.5) - 0.5).astype(np.float32)
        source = np.maximum(source, np.float32(0.0))
        first = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
        weight1 = np.clip(source - first.astype(np.float32), 0.0, 1.0).astype(np.float32)
        self.first = first
        self.second = first + (first < size_in - 1)
        self.weight0 = torch.from_numpy(np.float32(1.0) - weight1)
        self.weight1 = torch.from_numpy(weight1)

    def interpolate_columns(self, values: torch.Tensor) -> torch.Tensor:
        """Resize (C, h, w) values along w: w0 v[i0] + w1 v[i1] (one fused multiply-add)."""
        array = values.numpy()
        # np.take gathers along the last dimension without index_select's per-element loop.
        high = torch.from_numpy(np.take(array, self.second, axis=2)).mul_(self.weight1)
        return high.addcmul_(torch.from_numpy(np.take(array, self.first, axis=2)), self.weight0)

    def interpolate_rows(self, values: torch.Tensor, start: int, stop: int,
                         low: torch.Tensor, high: torch.Tensor) -> None:
        """Resize (C, h, W) values along h for output rows start..stop into ``high``."""
        rows = slice(start, stop)
        array = values.numpy()
        np.take(array, self.first[rows], axis=1, out=low.numpy(), mode='clip')  # (C, rows, W)
        np.take(array, self.second[rows], axis=1, out=high.numpy(), mode='clip')
        high.mul_(self.weight1[rows].view(-1, 1)).addcmul_(low, self.weight0[rows].view(-1, 1))


def _banded_upsampling_is_exact(logits: torch.Tensor, output_hw: Tuple[int, int]) -> bool:
    """Check once per sizes that the banded upsampling equals ``F.interpolate`` bit for bit."""
    height_in, width_in = logits.shape[2:]
    if not logits.is_contiguous() or logits.is_contiguous(memory_format=torch.channels_last):
        return False  # F.interpolate takes its channels-last kernel for these
    key = (height_in, width_in) + tuple(output_hw)
    with _exact_sizes_lock:
        exact = _exact_sizes.get(key)
        if exact is None:
            generator = torch.Generator().manual_seed(0)
            probe = torch.randn(1, 4, height_in, width_in, generator=generator)
            expected = F.interpolate(probe, size=output_hw, mode='bilinear', align_corners=False)
            rows = _BilinearTaps(height_in, output_hw[0])
            cols = _BilinearTaps(width_in, output_hw[1])
            across = cols.interpolate_columns(probe[0])  # (4, h, W)
            low = torch.empty(4, output_hw[0], output_hw[1])
            high = torch.empty_like(low)
            rows.interpolate_rows(across, 0, output_hw[0], low, high)
            exact = bool(torch.equal(high, expected[0]))
            _exact_sizes[key] = exact
    return exact
