"""Shares of the scene list for jobs that run side by side (``num_shards`` jobs, e.g. a SLURM array).

Every job computes the same partition on its own, from the scene list and each scene's cost (the
reader's :meth:`scene_cost`: points and frames, read from headers and folder listings), so no job
needs to talk to another: scenes are dealt largest first to the share with the least cost so far
(ties: the lower share; equal costs: scene id order). Each scene lands in exactly one share, and
the shares' costs differ by at most one scene's cost.
"""

from __future__ import annotations

from featurizer.errors import ConfigError


def balanced_shares(costs: dict[str, float], num_shards: int) -> list[list[str]]:
    """``num_shards`` disjoint lists of scene ids covering ``costs``' keys, balanced by cost; each list in
    the scene list's order."""
    if num_shards < 1:
        raise ConfigError("num_shards", f"must be >= 1, got {num_shards}")
    order = {s: i for i, s in enumerate(costs)}
    loads = [0.0] * num_shards
    shares: list[list[str]] = [[] for _ in range(num_shards)]
    for scene in sorted(costs, key=lambda s: (-costs[s], order[s])):
        k = min(range(num_shards), key=lambda j: (loads[j], j))
        shares[k].append(scene)
        loads[k] += costs[scene]
    return [sorted(share, key=order.__getitem__) for share in shares]


def share_of(costs: dict[str, float], shard: int, num_shards: int) -> list[str]:
    """The scenes of job ``shard`` (0-based) of ``num_shards``."""
    if not 0 <= int(shard) < int(num_shards):
        raise ConfigError("shard", f"must be in 0..{int(num_shards) - 1} (num_shards={num_shards}), got {shard}")
    return balanced_shares(costs, int(num_shards))[int(shard)]
