"""The serving engines on the NumPy backend: paged = reservation = the plain reference, with and without
preemption (recompute and swap), and the KV managers' bookkeeping."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workloads.serving.engine import Engine, EngineConfig, PagedKV, ReservedKV, Sequence
from workloads.serving.model import init_weights_numpy, model_config, prompt_tokens, reference_logits
from workloads.serving.runner_cpu import NumpyRunner

CONFIG = model_config("tiny")
WEIGHTS = init_weights_numpy(CONFIG, seed=3)


def _requests(lengths, arrivals=None):
    arrivals = arrivals or [0.0] * len(lengths)
    return [Sequence(i, arrivals[i], prompt_tokens(i, n_in, CONFIG.vocab, seed=5), n_out)
            for i, (n_in, n_out) in enumerate(lengths)]


def _serve(kv, lengths, *, preemption="recompute", max_len=256, arrivals=None):
    runner = NumpyRunner(CONFIG, WEIGHTS, kv.num_blocks, 16, keep_logits=True)
    engine = Engine(runner, kv, EngineConfig(max_len=max_len, preemption=preemption, keep_logits=True))
    return engine, engine.run(_requests(lengths, arrivals))


LENGTHS = [(5, 9), (17, 20), (33, 4), (1, 16), (40, 31)]


def test_paged_and_reservation_match_the_reference():
    _, paged = _serve(PagedKV(64, 16), LENGTHS)
    _, reserved = _serve(ReservedKV(5 * 16, 16, 256), LENGTHS)
    for p, r, (n_in, n_out) in zip(paged, reserved, LENGTHS):
        assert len(p.output) == n_out == len(r.output)
        assert p.output == r.output
        np.testing.assert_allclose(np.stack(p.logits), np.stack(r.logits), rtol=1e-4, atol=1e-4)
        # teacher-forced plain forward over prompt + generated tokens: the logits that chose each token
        ref = reference_logits(CONFIG, WEIGHTS, p.prompt + p.output[:-1])[n_in - 1:]
        np.testing.assert_allclose(np.stack(p.logits), ref, rtol=1e-3, atol=1e-3)
        assert p.output == ref.argmax(axis=-1).tolist()


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_preemption_keeps_the_tokens(mode):
    lengths = [(30, 40), (28, 45), (20, 50), (25, 33)]
    _, roomy = _serve(PagedKV(64, 16), lengths)
    engine, tight = _serve(PagedKV(14, 16), lengths, preemption=mode)  # 224 slots for 4 x ~70 tokens
    assert engine.preemptions[mode] > 0 and sum(s.preemptions for s in tight) == engine.preemptions[mode]
    assert [s.output for s in tight] == [s.output for s in roomy]
    assert engine.kv.manager.num_used_blocks == 0  # everything freed at the end
    for seq in tight:
        assert len(seq.token_times) == seq.output_len and seq.token_times == sorted(seq.token_times)


def test_swapping_out_is_on_the_clock():
    # the copy to host memory was outside the timed work: swap looked free beside recompute's re-prefill
    class SlowSwap(NumpyRunner):
        def swap_out(self, blocks):
            deadline = time.perf_counter() + 0.02
            while time.perf_counter() < deadline:
                pass
            return super().swap_out(blocks)

    lengths = [(30, 40), (28, 45), (20, 50), (25, 33)]
    kv = PagedKV(14, 16)
    engine = Engine(SlowSwap(CONFIG, WEIGHTS, kv.num_blocks, 16), kv, EngineConfig(max_len=256, preemption="swap"))
    engine.run(_requests(lengths))
    outs = [it for it in engine.iterations if it["kind"] == "swap_out"]
    assert len(outs) == engine.preemptions["swap"] > 0
    assert all(it["elapsed_s"] >= 0.02 for it in outs)
    assert engine.now >= sum(it["elapsed_s"] for it in engine.iterations)


def test_reservation_caps_the_batch_and_waits_in_order():
    engine, done = _serve(ReservedKV(2 * 16, 16, 256), [(10, 5)] * 4)  # two 256-token ranges
    assert max(it["running"] for it in engine.iterations) == 2
    firsts = [s.token_times[0] for s in done]
    assert firsts == sorted(firsts) and firsts[2] > firsts[1]


def test_idle_time_is_skipped_and_arrivals_respected():
    engine, done = _serve(PagedKV(64, 16), [(5, 3), (5, 3)], arrivals=[0.0, 100.0])
    assert done[1].token_times[0] >= 100.0
    assert done[1].token_times[-1] - 100.0 < 50.0


def test_request_longer_than_max_len_is_a_clear_error():
    with pytest.raises(ValueError, match="exceed max_len"):
        _serve(PagedKV(64, 16), [(200, 100)], max_len=256)


def test_reserved_kv_tables_are_contiguous_ranges():
    kv = ReservedKV(40, 16, 160)  # 10 blocks per range, 4 ranges
    slots = kv.admit("a", 20, 160)
    kv.admit("b", 3, 160)
    assert slots.tolist() == list(range(slots[0], slots[0] + 20))
    assert kv.append(["a", "b"]).tolist() == [slots[0] + 20, kv._slots("b", 3, 4)[0]]
    table = kv.block_table("a")
    assert table == list(range(table[0], table[0] + 2)) and kv.allocated_tokens() == 2 * 160
    kv.free("a")
    assert kv.can_admit(1, 160) and kv.allocated_tokens() == 160


def test_a_request_that_cannot_fit_an_empty_cache_is_a_clear_error():
    with pytest.raises(RuntimeError, match="request 0 .*cannot be admitted into an empty KV cache of 32 slots"):
        _serve(PagedKV(2, 16), [(40, 5)])


def test_a_sweep_point_serves_the_requests_of_its_arrival_window():
    from workloads.serving.serve import select_requests
    from workloads.serving.traces import Request

    trace = [Request(i, 0.1 * i, 10, 10) for i in range(100)]  # 10 req/s over 10 s
    # rescaled to 5 req/s (scale 2): the first 4 s hold arrivals 0.0 .. 3.8 s, requests 0..19
    assert [r.id for r in select_requests(trace, 2.0, duration=4, min_requests=0, num=0, where="t")] == list(range(20))
    assert len(select_requests(trace, 2.0, duration=4, min_requests=30, num=0, where="t")) == 30
    assert len(select_requests(trace, 2.0, duration=4, min_requests=30, num=25, where="t")) == 25  # num caps
    assert len(select_requests(trace, 1.0, duration=None, min_requests=0, num=7, where="t")) == 7
    # a window the trace does not cover is an error naming the trace, not a silently shorter run
    with pytest.raises(ValueError, match="t: the trace's 100 requests arrive within 19.8 s"):
        select_requests(trace, 2.0, duration=30, min_requests=0, num=0, where="t")
    with pytest.raises(ValueError, match="or 150 requests"):
        select_requests(trace, 2.0, duration=4, min_requests=150, num=0, where="t")


def test_a_swap_out_sample_counts_the_victim_once():
    # the swap_out sample is taken after the victim left the running set but before its blocks are freed
    # and before it joins the swapped queue: its blocks count as allocated with none of its token states
    # (they read as waste in the KV shares) and it is in neither `running` nor `waiting`
    lengths = [(30, 40), (28, 45), (20, 50), (25, 33)]
    engine, _ = _serve(PagedKV(14, 16), lengths, preemption="swap")
    samples = engine.iterations
    outs = [i for i, it in enumerate(samples) if it["kind"] == "swap_out"]
    assert outs
    for i in outs:
        before, out = samples[i - 1], samples[i]
        assert out["waiting"] >= 1, out          # the victim waits in the swapped queue
        # freeing a victim's blocks and its token states together cannot raise the waste above the step's
        assert out["allocated_tokens"] - out["token_states"] <= before["allocated_tokens"] - before["token_states"], (
            before, out)
