"""Finding the groups in a flat batch: RL stacks hand over G responses per prompt as consecutive
rows, and CaT must see each group whole (the anchor synthesizes from all G, never a subset)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from catrl.errors import InputError


def consecutive_runs(keys: Sequence[Hashable], group_size: int | None = None, hint: str = "") -> list[list[int]]:
    """Indices of consecutive rows with equal keys, cut every `group_size` rows. With a group size,
    a shorter run is a partial group: InputError naming the rows and `hint` (how to fix it)."""
    if group_size is not None and group_size < 1:
        raise InputError(f"group size must be >= 1, got {group_size}")
    runs: list[list[int]] = []
    for i, k in enumerate(keys):
        if runs and keys[runs[-1][0]] == k and (group_size is None or len(runs[-1]) < group_size):
            runs[-1].append(i)
        else:
            runs.append([i])
    if group_size is not None:
        for r in runs:
            if len(r) != group_size:
                raise InputError(f"rows {r[0]}..{r[-1]}: {len(r)} consecutive responses of one prompt, expected "
                                 f"{group_size}: a partial group{'. ' + hint if hint else ''}")
    return runs
