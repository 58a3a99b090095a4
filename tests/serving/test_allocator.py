"""Allocator replay: contiguous allocators, the policies' invariants on real traces, a hand-computed case."""

from __future__ import annotations

import json
import random

import pytest

from workloads.serving import allocator
from workloads.serving.allocator import ReplayConfig, Server, replay
from workloads.serving.contiguous import BuddyAllocator, FirstFitAllocator
from workloads.serving.policies import POLICIES, RESERVATION_RULES, make_policy, next_power_of_two
from workloads.serving.traces import Request, generate, write_trace

BLOCK = 16


# -- contiguous allocators ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [FirstFitAllocator, BuddyAllocator])
def test_random_allocate_free_keeps_the_pool_tiled_and_merges_back(kind):
    rng = random.Random(3)
    pool = kind(15360)
    live: list[int] = []
    for _ in range(3000):
        if live and rng.random() < 0.45:
            pool.free(live.pop(rng.randrange(len(live))))
        else:
            start = pool.allocate(rng.randint(1, 2048))
            if start is not None:
                live.append(start)
        pool.check_invariants()
    for start in live:
        pool.free(start)
    pool.check_invariants()
    assert pool.num_free == 15360 and pool.largest_hole() == (15360 if kind is FirstFitAllocator else 8192)


def test_first_fit_refuses_a_range_larger_than_every_hole_even_when_the_total_suffices():
    pool = FirstFitAllocator(24)
    a, b = pool.allocate(8), pool.allocate(12)
    assert (a, b, pool.num_free) == (0, 8, 4)
    pool.free(a)
    assert pool.num_free == 12 and pool.largest_hole() == 8 and pool.allocate(12) is None
    pool.free(b)
    assert pool.allocate(24) == 0


def test_buddy_rounds_to_powers_of_two_and_aligns_blocks():
    pool = BuddyAllocator(24)  # chunks [0, 16) and [16, 24)
    assert pool.allocate(5) == 16 and pool.size(16) == 8  # the smallest block that fits: order 3 at 16
    assert pool.allocate(9) == 0 and pool.size(0) == 16
    assert pool.allocate(1) is None and pool.num_free == 0
    with pytest.raises(ValueError, match="double free"):
        pool.free(3)


def test_reservation_rules():
    assert next_power_of_two(1) == 1 and next_power_of_two(25) == 32 and next_power_of_two(32) == 32
    policies = {rule: make_policy(rule, 4096, 2048) for rule in RESERVATION_RULES}
    assert policies["orca-max"].reservation(10, 25) == 2048
    assert policies["orca-pow2"].reservation(10, 25) == 10 + 32  # the paper's example: output 25 -> 32 slots
    assert policies["orca-pow2"].reservation(1500, 900) == 2048  # never beyond the model's maximum length
    assert policies["orca-oracle"].reservation(10, 25) == 35


# -- the replay on real traces ---------------------------------------------------------------------------

CONFIG = ReplayConfig(capacity=4096, max_len=1024, block_size=BLOCK, max_batch=128)


@pytest.fixture(scope="module")
def replays() -> dict[str, dict[str, dict]]:
    """Both datasets through every policy, with every iteration audited and checked."""
    out: dict[str, dict[str, dict]] = {}
    for dataset in ("sharegpt", "alpaca"):
        _, requests = generate(dataset, rate=200.0, num=400, seed=2, max_input=512, max_output=512)
        out[dataset] = {}
        for name in POLICIES:
            policy = make_policy(name, CONFIG.capacity, CONFIG.max_len, BLOCK)
            checks = _Checks(requests)
            result = replay(requests, policy, CONFIG, observer=checks)
            policy.check_invariants()
            assert policy.free_slots() == CONFIG.capacity and result["finished"] == len(requests)
            result["checks"] = checks
            out[dataset][name] = result
    return out


class _Checks:
    """A replay observer: audits the sums and records per-iteration facts the tests assert on."""

    def __init__(self, requests: list[Request]) -> None:
        self.iterations = 0
        self.max_allocated = 0
        self.max_unfilled_paged = 0  # most unfilled slots any one paged request held
        self.max_internal_paged = 0
        self.total_len = {r.id: r.total_len for r in requests}

    def __call__(self, server: Server, step: int) -> None:
        server.audit(step)  # sums, allocated + free == capacity, tokens <= slots
        self.iterations += 1
        policy = server.policy
        allocated = sum(policy.allocated(live.request.id) for live in server.running)
        assert allocated <= policy.capacity
        self.max_allocated = max(self.max_allocated, allocated)
        if policy.name == "paged":
            for live in server.running:
                slots = policy.allocated(live.request.id)
                self.max_unfilled_paged = max(self.max_unfilled_paged, slots - live.tokens_at(step))
                self.max_internal_paged = max(self.max_internal_paged, slots - min(slots, live.request.total_len))


def test_never_over_capacity_and_shares_add_up(replays):
    for dataset, results in replays.items():
        for name, result in results.items():
            assert result["checks"].iterations == result["iterations"] > 0
            assert result["checks"].max_allocated <= CONFIG.capacity
            for average in ("loaded", "busy"):
                total = sum(result[average][c] for c in allocator.CATEGORIES)
                assert total == pytest.approx(1.0), (dataset, name, average)
            series = result["series"]
            for index in range(len(series["t_s"])):
                assert sum(series[c][index] for c in allocator.CATEGORIES) == pytest.approx(1.0, abs=1e-4)


def test_paging_holds_more_token_states_than_every_reservation_policy(replays):
    for dataset, results in replays.items():
        paged = results["paged"]["loaded"]
        for name, result in results.items():
            if name != "paged":
                assert paged["token_states"] > result["loaded"]["token_states"], (dataset, name)
                assert paged["token_states_of_allocated"] > result["loaded"]["token_states_of_allocated"]
                assert paged["mean_batch"] > result["loaded"]["mean_batch"], (dataset, name)


def test_token_state_share_orders_oracle_over_pow2_over_max_for_each_allocator(replays):
    for dataset, results in replays.items():
        for suffix in ("", "-buddy"):
            share = {rule: results[rule + suffix]["loaded"]["token_states"] for rule in RESERVATION_RULES}
            assert share["orca-oracle"] >= share["orca-pow2"] >= share["orca-max"], (dataset, suffix, share)
            # the buddy allocator's rounding only ever adds waste
            assert share["orca-oracle"] <= results["orca-oracle"]["loaded"]["token_states"] + 1e-9


def test_paged_waste_per_request_stays_below_one_block_and_oracle_has_no_internal_fragmentation(replays):
    for dataset, results in replays.items():
        checks = results["paged"]["checks"]
        assert checks.max_unfilled_paged < BLOCK and checks.max_internal_paged < BLOCK, dataset
        paged = results["paged"]["loaded"]
        assert paged["internal_frag"] * CONFIG.capacity < BLOCK * paged["mean_batch"]
        assert results["orca-oracle"]["loaded"]["internal_frag"] == 0
        assert results["paged"]["loaded"]["external_frag"] == 0  # blocks leave no unusable holes


def test_paging_preempts_under_pressure_and_still_finishes_every_request(replays):
    results = replays["sharegpt"]
    assert results["paged"]["preemptions"] > 0  # a trace this loaded must run out of blocks mid-decode
    assert all(results[name]["preemptions"] == 0 for name in POLICIES if name != "paged")


# -- a case computed by hand -----------------------------------------------------------------------------

def test_first_fit_oracle_by_hand_external_fragmentation_appears_when_holes_do_not_fit():
    # pool of 24 slots; A and B admitted at once ([0, 8) and [8, 20)); D (12 slots) waits. When A leaves,
    # 12 slots are free but in two holes (8 + 4): external fragmentation until B leaves and they merge.
    requests = [Request(0, 0.0, 2, 6), Request(1, 0.0, 2, 10), Request(2, 0.0, 2, 10)]
    config = ReplayConfig(capacity=24, max_len=24, block_size=4, max_batch=8, step_s=1.0, watermark=0.0)
    rows = []
    replay(requests, make_policy("orca-oracle", 24, 24), config,
           observer=lambda server, step: rows.append((step, server.sums.tokens, len(server.running),
                                                      server.policy.free_slots())))
    assert rows[0] == (0, 4, 2, 4)  # prompts of A and B cached, D does not fit
    assert rows[6] == (6, 2 + 6 + 2 + 6, 2, 4)  # A at its last token (8), B at 8
    assert rows[7][2:] == (1, 12)  # A gone: 12 free, but the largest hole is 8
    assert rows[11][2:] == (1, 12)  # B left after iteration 10: D admitted into the merged pool
    result = replay(requests, make_policy("orca-oracle", 24, 24), config)
    series = result["series"]
    external = dict(zip(series["t_s"], series["external_frag"]))
    assert [external[float(step)] * 24 for step in range(7, 11)] == [12, 12, 12, 12]
    assert external[0.0] == 0 and external[6.0] == 0  # 4 free slots < 12 needed: free, not fragmentation


# -- CLI ---------------------------------------------------------------------------------------------------

def test_cli_writes_labelled_results_for_every_policy(tmp_path):
    header, requests = generate("alpaca", rate=100.0, num=150, seed=1)
    write_trace(tmp_path / "t.jsonl", header, requests)
    out = tmp_path / "replay.json"
    assert allocator.main([str(tmp_path / "t.jsonl"), "--out", str(out), "--capacity-tokens", "4096"]) == 0
    document = json.loads(out.read_text())
    assert document["task"] == "serving:replay" and document["backend"] == "cpu"
    assert document["device"]["backend"] in {"cpu", "cuda"}
    assert [p["policy"] for p in document["policies"]] == list(POLICIES)
    assert document["trace"]["dataset"] == "alpaca" and document["config"]["capacity_tokens"] == 4096


@pytest.mark.parametrize("args,message", [
    (["--capacity-tokens", "4100"], "multiple of the block size"),
    (["--max-len", "100"], "more than --max-len 100"),
    (["--capacity-tokens", "1024"], "exceeds --capacity-tokens 1024"),
])
def test_cli_configuration_errors_say_what_to_change(tmp_path, capsys, args, message):
    header, requests = generate("sharegpt", rate=10.0, num=100, seed=1)
    write_trace(tmp_path / "t.jsonl", header, requests)
    assert allocator.main([str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "r.json"), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r.json").exists()
