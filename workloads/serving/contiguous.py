"""Allocators of contiguous token ranges: how a reservation-based server lays out its KV cache.

The KV pool is the address range [0, capacity) in token slots. Each request gets one contiguous range at
admission and keeps it until it leaves, so the pool develops holes between live ranges; a request that needs
more than the largest hole waits even when the holes add up to enough (external fragmentation).

* FirstFitAllocator: the range is exactly the size asked for, at the lowest address where it fits; freed
  ranges merge with free neighbours. O(holes) per call; a replay keeps a few hundred holes at most.
* BuddyAllocator: sizes round up to a power of two and ranges sit at multiples of their size, split from
  and merged back into larger buddies (the allocator of the paper's Orca baselines, its section 6.5). The
  rounding is internal fragmentation on top of the reservation policy's own.
"""

from __future__ import annotations

import bisect


class FirstFitAllocator:
    """Contiguous ranges of a fixed address space, lowest fitting address first."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._holes: list[tuple[int, int]] = [(0, capacity)]  # (start, size), sorted by start, never adjacent
        self._ranges: dict[int, int] = {}  # start -> size of each live range
        self.num_free = capacity

    def largest_hole(self) -> int:
        return max((size for _, size in self._holes), default=0)

    def size(self, start: int) -> int:
        """Slots held by the live range starting at `start`."""
        return self._ranges[start]

    def allocate(self, size: int) -> int | None:
        """The start of a fresh range of `size` slots, or None when no hole is large enough."""
        if size <= 0:
            raise ValueError(f"a range must hold at least one slot, got {size}")
        for index, (start, hole) in enumerate(self._holes):
            if hole >= size:
                if hole == size:
                    del self._holes[index]
                else:
                    self._holes[index] = (start + size, hole - size)
                self._ranges[start] = size
                self.num_free -= size
                return start
        return None

    def free(self, start: int) -> None:
        """Return the range starting at `start`, merging it with the free neighbours."""
        size = self._ranges.pop(start, None)
        if size is None:
            raise ValueError(f"no live range starts at slot {start} (double free?)")
        self.num_free += size
        index = bisect.bisect_left(self._holes, (start, 0))
        end = start + size
        if index < len(self._holes) and self._holes[index][0] == end:  # merge with the hole after
            end += self._holes.pop(index)[1]
        if index > 0 and sum(self._holes[index - 1]) == start:  # merge with the hole before
            start = self._holes[index - 1][0]
            self._holes[index - 1] = (start, end - start)
        else:
            self._holes.insert(index, (start, end - start))

    def check_invariants(self) -> None:
        """Raise AssertionError when holes and live ranges do not tile [0, capacity) exactly once."""
        pieces = sorted([(s, n, "hole") for s, n in self._holes] + [(s, n, "range") for s, n in self._ranges.items()])
        position = 0
        for index, (start, size, kind) in enumerate(pieces):
            assert start == position and size > 0, f"gap or overlap at slot {position}"
            if kind == "hole" and index > 0:
                assert pieces[index - 1][2] == "range", f"two adjacent holes at slot {start}"
            position += size
        assert position == self.capacity, "pieces do not cover the pool"
        assert self.num_free == sum(n for _, n in self._holes), "free count differs from the holes"


class BuddyAllocator:
    """Power-of-two ranges aligned to their size, split on demand and merged with their free buddy on release.

    A capacity that is not a power of two is cut into aligned power-of-two chunks, largest first
    (15360 = 8192 + 4096 + 2048 + 1024); a chunk never merges with its neighbour.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._free: dict[int, set[int]] = {}  # order -> starts of free blocks of 2**order slots
        self._chunks: list[tuple[int, int]] = []  # (start, order) of the top-level chunks
        start = 0
        for order in range(capacity.bit_length() - 1, -1, -1):
            if capacity & (1 << order):
                self._chunks.append((start, order))
                self._free.setdefault(order, set()).add(start)
                start += 1 << order
        self._live: dict[int, int] = {}  # start -> order
        self.num_free = capacity

    def _chunk_order(self, start: int) -> int:
        for base, order in self._chunks:
            if base <= start < base + (1 << order):
                return order
        raise ValueError(f"slot {start} is outside the pool")

    def largest_hole(self) -> int:
        return max((1 << order for order, starts in self._free.items() if starts), default=0)

    def size(self, start: int) -> int:
        return 1 << self._live[start]

    def allocate(self, size: int) -> int | None:
        """The start of a free block of the next power of two >= `size` slots, or None when none is free."""
        if size <= 0:
            raise ValueError(f"a range must hold at least one slot, got {size}")
        want = max(0, size - 1).bit_length()
        order = next((o for o in sorted(self._free) if o >= want and self._free[o]), None)
        if order is None:
            return None
        start = min(self._free[order])  # lowest address first, as first-fit does
        self._free[order].discard(start)
        while order > want:  # split, keeping the upper halves free
            order -= 1
            self._free.setdefault(order, set()).add(start + (1 << order))
        self._live[start] = want
        self.num_free -= 1 << want
        return start

    def free(self, start: int) -> None:
        order = self._live.pop(start, None)
        if order is None:
            raise ValueError(f"no live block starts at slot {start} (double free?)")
        self.num_free += 1 << order
        top = self._chunk_order(start)
        while order < top:
            buddy = start ^ (1 << order)
            if buddy not in self._free.get(order, ()):
                break
            self._free[order].discard(buddy)
            start = min(start, buddy)
            order += 1
        self._free.setdefault(order, set()).add(start)

    def check_invariants(self) -> None:
        """Raise AssertionError when free and live blocks overlap, leave gaps, or a block is misaligned."""
        pieces = sorted([(s, o) for o, starts in self._free.items() for s in starts] + list(self._live.items()))
        position = 0
        for start, order in pieces:
            assert start == position, f"gap or overlap at slot {position}"
            assert (start - next(b for b, o in self._chunks if b <= start < b + (1 << o))) % (1 << order) == 0, \
                f"block at {start} of order {order} is misaligned"
            position += 1 << order
        assert position == self.capacity, "blocks do not cover the pool"
        assert self.num_free == sum(len(starts) << order for order, starts in self._free.items()), "free count"
