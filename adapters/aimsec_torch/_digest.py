"""A content digest of a tensor computed where it lives (imports torch: loaded on demand).

Only four numbers leave the device. The tensor's bytes are read as unsigned 16-bit halves
``h_i``; lane ``k`` of the digest is ``sum_i a_k**(i // CHUNK) * w_k[i % CHUNK] * h_i mod P``
with fixed pseudo-random weights ``w_k`` (a multilinear hash), so every bit and its position
count. The core adds dtype and shape. CPU tensors never come here: the core hashes their
bytes with blake2b, so one content hashes differently on the host and on a device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

P = 2_147_483_647  # 2**31 - 1, a Mersenne prime
CHUNK = 1 << 16  # halves per chunk: 2**16 products below 2**47 sum below 2**63 (no overflow)
BLOCK = 16  # chunks per pass over the device: bounds the int64 temporaries (32 MiB)
LANES = 4  # independent weight vectors: 4 x 31 bits of digest
SEED = 0x5EED_A1E5
BASES = (16807, 48271, 69621, 950706376)  # primitive roots modulo 2**31 - 1

_weights_by_device: dict[str, Any] = {}


def lane_weights(device: Any) -> torch.Tensor:
    """(lanes, chunk) pseudo-random int64 weights in [1, P): splitmix64 of the position,
    so the same on every device, machine and library version."""
    key = str(device)
    weights = _weights_by_device.get(key)
    if weights is None:
        z = np.arange(LANES * CHUNK, dtype=np.uint64) + np.uint64(SEED)
        z *= np.uint64(0x9E3779B97F4A7C15)  # uint64 arithmetic wraps, as splitmix64 wants
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        values = (z % np.uint64(P - 1) + np.uint64(1)).astype(np.int64)
        weights = torch.from_numpy(values.reshape(LANES, CHUNK)).to(device)
        _weights_by_device[key] = weights
    return weights


def chunk_multipliers(first: int, count: int) -> list[list[int]]:
    """Per lane, a_lane ** chunk_index mod P: later chunks weigh differently from earlier ones."""
    return [[pow(a, first + c, P) for c in range(count)] for a in BASES[:LANES]]


def device_digest(tensor: torch.Tensor) -> str:
    """32 hex digits for the tensor's bytes, computed on its device (see the module)."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    weights = lane_weights(data.device)
    total = torch.zeros(LANES, dtype=torch.int64, device=data.device)
    step = 2 * CHUNK * BLOCK
    chunk = 0
    for start in range(0, max(data.numel(), 1), step):
        piece = data[start:start + step]
        if piece.numel() % 2 or piece.storage_offset() % 2:
            padded = piece.new_zeros(piece.numel() + piece.numel() % 2)
            padded[:piece.numel()] = piece
            piece = padded
        halves = piece.view(torch.int16).to(torch.int64).bitwise_and_(0xFFFF)
        if halves.numel() <= CHUNK and chunk == 0:  # the common small input: one chunk
            sums = (halves * weights[:, :halves.numel()]).sum(dim=1, keepdim=True)
        else:
            tail = (-halves.numel()) % CHUNK
            if tail:
                halves = torch.nn.functional.pad(halves, (0, tail))
            halves = halves.view(-1, CHUNK)
            sums = (halves.unsqueeze(0) * weights.unsqueeze(1)).sum(dim=2)  # (lanes, chunks)
        count = sums.shape[1]
        if chunk == 0 and count == 1:
            total += sums[:, 0] % P
        else:
            scale = torch.tensor(chunk_multipliers(chunk, count), dtype=torch.int64,
                                 device=data.device)
            total += ((sums % P) * scale % P).sum(dim=1)
        total %= P
        chunk += count
    return "".join(f"{int(v):08x}" for v in total.tolist())
