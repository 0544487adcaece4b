"""Batched farthest point sampling and kNN grouping for Uni3D, in plain torch (CPU and GPU).

These reproduce the reference's CUDA ``pointnet2_ops.furthest_point_sample`` and its
``knn_point`` / ``square_distance`` (DESIGN.md section 5), with the same quirks:

- the first centre is point 0;
- each point's running minimum squared distance starts at 1e10;
- the next centre is the argmax of that running minimum, ties going to the lower index;
- points with ``|p|^2 <= 1e-3`` are never chosen (they are skipped, as the CUDA kernel does);
  when no point is eligible the kernel's default index 0 is taken. So a cloud with fewer
  points than centres (e.g. 37 points duplicated to 74, for 512 centres) first takes every
  distinct eligible position, then, every running minimum being 0, takes the lowest
  eligible index again and again.

Clouds of different sizes are batched by padding: ``lengths`` gives the valid prefix of each
row. Padded points are never chosen as centres and never returned as neighbours.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

FPS_INIT = 1e10  # the kernel's initial running minimum
FPS_MIN_MAG = 1e-3  # points with squared norm <= this are never chosen


def valid_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) bool: True for the first ``lengths[b]`` points of row b. lengths: (B,) int."""
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


@contextmanager
def _one_cpu_thread(device: torch.device):
    """FPS is ``num`` rounds of small element-wise ops: on the CPU, intra-op threads only add
    barrier waits (seconds per call on a loaded machine), so it runs single-threaded."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def farthest_point_sample(xyz: torch.Tensor, num: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of ``num`` farthest-point-sampled centres of each cloud.

    xyz: (B, N, 3) float; lengths: (B,) int64 valid points per row (None: all N).
    returns: (B, num) int64 indices into the N axis (repeats when a cloud has too few points).
    """
    with _one_cpu_thread(xyz.device):
        return _fps(xyz, num, lengths)


def _fps(xyz: torch.Tensor, num: int, lengths: torch.Tensor | None) -> torch.Tensor:
    b, n, _ = xyz.shape
    device = xyz.device
    x, y, z = xyz.permute(2, 0, 1).contiguous()  # (B, N) each, contiguous
    mag = x * x + y * y + z * z
    eligible = mag > FPS_MIN_MAG
    if lengths is not None:
        eligible &= valid_mask(lengths.to(device), n)
    # Ineligible points hold -1 as their running minimum: min(-1, d >= 0) keeps it there, so they
    # are never chosen while an eligible point exists; when none does, the argmax of all -1 is
    # index 0, the kernel's default.
    temp = torch.where(eligible, torch.full_like(mag, FPS_INIT), torch.full_like(mag, -1.0))
    idx = torch.zeros(b, num, dtype=torch.long, device=device)
    old = torch.zeros(b, 1, dtype=torch.long, device=device)
    d = torch.empty_like(mag)
    t = torch.empty_like(mag)
    for j in range(1, num):
        torch.sub(x, x.gather(1, old), out=d)
        d.mul_(d)
        torch.sub(y, y.gather(1, old), out=t)
        d.addcmul_(t, t)
        torch.sub(z, z.gather(1, old), out=t)
        d.addcmul_(t, t)
        torch.minimum(temp, d, out=temp)
        old = temp.argmax(dim=1, keepdim=True)
        idx[:, j : j + 1] = old
    return idx


def square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Squared distances as the reference computes them: -2 src.dst + |src|^2 + |dst|^2.

    src: (B, M, 3), dst: (B, N, 3); returns (B, M, N).
    """
    dist = -2 * torch.matmul(src, dst.transpose(1, 2))
    dist += torch.sum(src**2, -1)[:, :, None]
    dist += torch.sum(dst**2, -1)[:, None, :]
    return dist


def knn(xyz: torch.Tensor, centers: torch.Tensor, k: int, lengths: torch.Tensor | None = None,
        max_elements: int = 1 << 24) -> torch.Tensor:
    """Indices of the ``k`` nearest points (squared distance) of each centre, in no particular order.

    xyz: (B, N, 3); centers: (B, G, 3); lengths: (B,) valid points per row (each >= k).
    returns: (B, G, k) int64 indices into the N axis. Rows are processed in chunks so that a
    distance matrix never holds more than ``max_elements`` entries.
    """
    b, n, _ = xyz.shape
    g = centers.shape[1]
    out = torch.empty(b, g, k, dtype=torch.long, device=xyz.device)
    step = max(1, max_elements // max(1, g * n))
    for s in range(0, b, step):
        dist = square_distance(centers[s : s + step], xyz[s : s + step])
        if lengths is not None:
            pad = ~valid_mask(lengths[s : s + step].to(xyz.device), n)
            dist.masked_fill_(pad[:, None, :], float("inf"))
        out[s : s + step] = torch.topk(dist, k, dim=-1, largest=False, sorted=False).indices
    return out


def group(points: torch.Tensor, num_group: int, group_size: int, lengths: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Farthest-point centres and their kNN neighbourhoods.

    points: (B, N, 6) float (xyz, rgb), padded past ``lengths``.
    returns: centre indices (B, G) int64, centres (B, G, 3), neighbour indices (B, G, K) int64.
    Features of a group are ``(points[nbr, :3] - centre, points[nbr, 3:])``.
    """
    xyz = points[..., :3].contiguous()
    cidx = farthest_point_sample(xyz, num_group, lengths)
    centers = torch.gather(xyz, 1, cidx[..., None].expand(-1, -1, 3))
    nbr = knn(xyz, centers, group_size, lengths)
    return cidx, centers, nbr
