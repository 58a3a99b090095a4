"""KV-cache memory policies of the PagedAttention paper's Figure 2, behind one small interface for the replay.

* Reservation (Orca): at admission a request gets one contiguous range and keeps it until it leaves. The
  range holds
    - orca-max:    the model's maximum sequence length, whatever the request;
    - orca-pow2:   the prompt plus the next power of two of the true output length (at most 2x over-reserved),
                   capped at the maximum length;
    - orca-oracle: the prompt plus the true output length (the output length known in advance).
  A reserved range always covers the request's final length, so decoding never runs out of memory. Each
  rule runs over a first-fit allocator (`orca-max`, ...: exactly the reserved size) and over a buddy
  allocator (`orca-max-buddy`, ...: rounded up to a power of two, as the paper's Orca baselines did);
  both are in workloads/serving/contiguous.py.
* Paged (vLLM): blocks of `block_size` slots from our block manager
  (workloads/paged_attention/block_manager.py), allocated as the sequence grows; admission keeps vLLM's
  watermark of free blocks back; decoding may run out of blocks, and the replay then preempts.

Every policy answers in token slots: `allocated(rid)` is what a live request holds, `free_slots()` what is
unallocated, and `fits_compacted(need)` whether `need` slots would fit if the free memory were one piece.
"""

from __future__ import annotations

from typing import Protocol

from workloads.paged_attention.block_manager import BlockManager, OutOfBlocks
from workloads.serving.contiguous import BuddyAllocator, FirstFitAllocator

RESERVATION_RULES = ("orca-max", "orca-pow2", "orca-oracle")
RESERVATION_POLICIES = (*RESERVATION_RULES, *(f"{rule}-buddy" for rule in RESERVATION_RULES))
POLICIES = (*RESERVATION_POLICIES, "paged")
LABELS = {"orca-max": "Orca (Max)", "orca-pow2": "Orca (Pow2)", "orca-oracle": "Orca (Oracle)",
          "orca-max-buddy": "Orca (Max), buddy", "orca-pow2-buddy": "Orca (Pow2), buddy",
          "orca-oracle-buddy": "Orca (Oracle), buddy", "paged": "paged"}


class KVPolicy(Protocol):
    name: str
    capacity: int
    allocator_name: str
    # True when admission reserves the final length: decoding then never allocates, and `grow` need not be
    # called (the replay skips the per-token calls).
    reserves_up_front: bool

    def admission_need(self, input_len: int, output_len: int, tokens: int) -> int:
        """Slots that must be free to admit a request (prompt `input_len`, true output `output_len`) that
        holds `tokens` tokens once admitted (its prompt, plus what it generated before a preemption)."""

    def try_admit(self, rid: int, input_len: int, output_len: int, tokens: int) -> bool:
        """Admit the request; False (nothing changed) when it does not fit."""

    def grow(self, rid: int) -> bool:
        """Make room for one more token of a live request; False (nothing changed) when memory is out."""

    def release(self, rid: int) -> None:
        """The request left (finished or preempted): return its memory."""

    def allocated(self, rid: int) -> int:
        """Slots the live request holds."""

    def free_slots(self) -> int:
        """Unallocated slots."""

    def fits_compacted(self, need: int) -> bool:
        """Whether `need` slots would fit in the free memory taken as one piece."""

    def check_invariants(self) -> None:
        """AssertionError when the allocator's bookkeeping is inconsistent."""


def next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class ReservationPolicy:
    """Orca-style: one contiguous range per request, sized by `rule`, for the request's whole life."""

    reserves_up_front = True

    def __init__(self, name: str, capacity: int, max_len: int) -> None:
        if name not in RESERVATION_POLICIES:
            raise ValueError(f"unknown reservation policy {name!r}; known: {', '.join(RESERVATION_POLICIES)}")
        self.name = name
        self.rule = name.removesuffix("-buddy")
        self.capacity = capacity
        self.max_len = max_len
        buddy = name.endswith("-buddy")
        self.allocator = BuddyAllocator(capacity) if buddy else FirstFitAllocator(capacity)
        self.allocator_name = "buddy" if buddy else "first-fit"
        self._starts: dict[int, int] = {}  # rid -> start of its range

    def reservation(self, input_len: int, output_len: int) -> int:
        if self.rule == "orca-max":
            return self.max_len
        if self.rule == "orca-pow2":
            return min(self.max_len, input_len + next_power_of_two(output_len))
        return input_len + output_len

    def admission_need(self, input_len: int, output_len: int, tokens: int) -> int:
        size = self.reservation(input_len, output_len)
        return next_power_of_two(size) if isinstance(self.allocator, BuddyAllocator) else size

    def try_admit(self, rid: int, input_len: int, output_len: int, tokens: int) -> bool:
        start = self.allocator.allocate(self.reservation(input_len, output_len))
        if start is None:
            return False
        self._starts[rid] = start
        return True

    def grow(self, rid: int) -> bool:
        return True  # the range was reserved for the final length up front

    def release(self, rid: int) -> None:
        self.allocator.free(self._starts.pop(rid))

    def allocated(self, rid: int) -> int:
        return self.allocator.size(self._starts[rid])

    def free_slots(self) -> int:
        return self.allocator.num_free

    def fits_compacted(self, need: int) -> bool:
        return self.allocator.num_free >= need

    def check_invariants(self) -> None:
        self.allocator.check_invariants()


class PagedPolicy:
    """vLLM-style: block tables over the block manager, grown one token at a time."""

    name = "paged"
    reserves_up_front = False

    def __init__(self, capacity: int, block_size: int, watermark: float = 0.01) -> None:
        if capacity % block_size:
            raise ValueError(f"the KV capacity ({capacity} tokens) must be a multiple of the block size "
                             f"({block_size}); round it to {capacity - capacity % block_size}")
        self.capacity = capacity
        self.block_size = block_size
        self.manager = BlockManager(capacity // block_size, block_size)
        self.watermark_blocks = int(watermark * self.manager.pool.num_blocks)
        self.allocator_name = f"block manager, block {block_size}"

    def admission_need(self, input_len: int, output_len: int, tokens: int) -> int:
        return (self.manager.blocks_needed(tokens) + self.watermark_blocks) * self.block_size

    def try_admit(self, rid: int, input_len: int, output_len: int, tokens: int) -> bool:
        if not self.manager.can_allocate(tokens, self.watermark_blocks):
            return False
        self.manager.add_sequence(rid, tokens)
        return True

    def grow(self, rid: int) -> bool:
        try:
            self.manager.append(rid)
        except OutOfBlocks:
            return False
        return True

    def release(self, rid: int) -> None:
        self.manager.free(rid)

    def allocated(self, rid: int) -> int:
        return self.manager.num_blocks(rid) * self.block_size

    def free_slots(self) -> int:
        return self.manager.num_free_blocks * self.block_size

    def fits_compacted(self, need: int) -> bool:
        return self.free_slots() >= need

    def check_invariants(self) -> None:
        self.manager.check_invariants()


def make_policy(name: str, capacity: int, max_len: int, block_size: int = 16, watermark: float = 0.01) -> KVPolicy:
    if name == "paged":
        return PagedPolicy(capacity, block_size, watermark)
    return ReservationPolicy(name, capacity, max_len)
