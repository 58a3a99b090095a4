"""The GPU serving engine (run with `pytest -m gpu` on a CUDA machine): greedy tokens and logits of the
paged engine, the reservation (contiguous) engine and plain PyTorch agree on a small batch."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

LENGTHS = [(5, 12), (37, 20), (64, 9), (1, 25), (100, 16), (16, 30)]


@pytest.fixture(scope="module")
def kernels_dir(tmp_path_factory):
    from workloads.paged_attention.build import build_all

    out = tmp_path_factory.mktemp("paged_build")
    summary = build_all(out, jobs=8)
    if summary["status"] != "built":
        pytest.skip(f"no CUDA compiler: {summary['reason']}")
    return out


def _config(group: int):
    from workloads.serving.model import ModelConfig

    # head dim 128 (what the kernels are built for), two layers, a vocabulary big enough to have ties rare
    return ModelConfig(f"small-g{group}", 4096, 512, 2, 4, 4 // group, 128, 1024, max_len=256)


def _weights(config):
    from workloads.serving.model import init_weights_numpy

    weights = init_weights_numpy(config, seed=7)
    rounded = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731 -- what the fp16 engine holds
    return {"embed": rounded(weights["embed"]), "norm": rounded(weights["norm"]),
            "lm_head": rounded(weights["lm_head"]),
            "layers": [{k: rounded(v) for k, v in layer.items()} for layer in weights["layers"]]}


def _same_greedy_path(a: list[int], b: list[int], logits: np.ndarray, tolerance: float) -> bool:
    """Equal token lists, or lists that part where the top two logits are within `tolerance` (a tie in
    fp16 arithmetic may go either way; after that the continuations differ legitimately)."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            top2 = np.sort(logits[index])[-2:]
            return bool(top2[1] - top2[0] <= tolerance)
    return len(a) == len(b)


def _serve(config, weights, kv, kernels_dir, attention="paged", preemption="recompute", dtype="fp16",
           lengths=LENGTHS):
    from workloads.serving.engine import Engine, EngineConfig, Sequence
    from workloads.serving.model import prompt_tokens
    from workloads.serving.runner_gpu import TorchRunner

    runner = TorchRunner(config, num_blocks=kv.num_blocks, dtype=dtype, attention=attention,
                         kernels_dir=kernels_dir, max_batch=16, max_len=config.max_len, weights=weights,
                         keep_logits=True)
    engine = Engine(runner, kv, EngineConfig(max_len=config.max_len, preemption=preemption, keep_logits=True,
                                             max_batch=16))
    seqs = [Sequence(i, 0.0, prompt_tokens(i, n_in, config.vocab, seed=1), n_out)
            for i, (n_in, n_out) in enumerate(lengths)]
    return runner, engine, engine.run(seqs)


@pytest.mark.parametrize("group", [1, 2])
def test_paged_reservation_and_reference_agree(kernels_dir, group):
    from workloads.serving.engine import PagedKV, ReservedKV
    from workloads.serving.model import reference_logits

    config = _config(group)
    weights = _weights(config)
    runner, _, paged = _serve(config, weights, PagedKV(128, 16), kernels_dir)
    assert runner.graphs, "the paged engine should decode through CUDA graphs"
    _, _, reserved = _serve(config, weights, ReservedKV(len(LENGTHS) * 16, 16, 256), kernels_dir)
    _, _, plain = _serve(config, weights, PagedKV(128, 16), kernels_dir, attention="torch")
    for p, r, t, (n_in, n_out) in zip(paged, reserved, plain, LENGTHS):
        assert len(p.output) == n_out == len(r.output) == len(t.output)
        lp = np.stack(p.logits)
        scale = np.abs(lp).max()
        tol = 1e-2 * scale
        assert _same_greedy_path(p.output, r.output, lp, tol), f"request {p.id}: paged != reservation"
        assert _same_greedy_path(p.output, t.output, lp, tol), f"request {p.id}: paged kernel != torch attention"
        if p.output == r.output:
            assert np.abs(lp - np.stack(r.logits)).max() <= tol
        # the plain forward (float64, no cache) over prompt + generated tokens, teacher-forced
        ref = reference_logits(config, weights, p.prompt + p.output[:-1])[n_in - 1:]
        err = np.linalg.norm(lp - ref) / np.linalg.norm(ref)
        assert err < 1e-2, f"request {p.id}: relative logit error {err:.2e} against the reference"
        top2 = np.sort(ref, axis=-1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) > tol  # ties within fp16 noise may go either way
        assert (np.asarray(p.output)[decided] == ref.argmax(axis=-1)[decided]).all()


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_preemption_on_the_gpu_keeps_the_tokens(kernels_dir, mode):
    from workloads.serving.engine import PagedKV

    config = _config(2)
    weights = _weights(config)
    _, _, roomy = _serve(config, weights, PagedKV(128, 16), kernels_dir)
    _, engine, tight = _serve(config, weights, PagedKV(14, 16), kernels_dir, preemption=mode)
    assert engine.preemptions[mode] > 0
    for a, b in zip(roomy, tight):
        logits = np.stack(a.logits)
        assert _same_greedy_path(a.output, b.output, logits, 1e-2 * np.abs(logits).max()), f"request {a.id}"



# The configuration the sweep times: bf16, a 2048-token model (so the decode kernel splits long contexts into
# partitions and reduces them), contexts past 512 tokens, and a batch the CUDA graph pads to its size.
LONG = [(700, 6), (1100, 5), (40, 8), (1500, 4), (530, 7)]


@pytest.mark.parametrize("group", [1, 2])
def test_bf16_long_contexts_through_the_split_kernel_agree_with_the_reference(kernels_dir, group):
    import torch

    from workloads.serving.engine import PagedKV
    from workloads.serving.model import ModelConfig, init_weights_numpy, reference_logits

    config = ModelConfig(f"small-long-g{group}", 4096, 512, 2, 4, 4 // group, 128, 1024, max_len=2048)
    bf16 = lambda a: torch.from_numpy(a).to(torch.bfloat16).float().numpy()  # noqa: E731 -- what the engine holds
    raw = init_weights_numpy(config, seed=11)
    weights = {"embed": bf16(raw["embed"]), "norm": bf16(raw["norm"]), "lm_head": bf16(raw["lm_head"]),
               "layers": [{k: bf16(v) for k, v in layer.items()} for layer in raw["layers"]]}
    runner, _, paged = _serve(config, weights, PagedKV(512, 16), kernels_dir, dtype="bf16", lengths=LONG)
    assert runner.graphs, "the paged engine should decode through CUDA graphs"
    _, _, plain = _serve(config, weights, PagedKV(512, 16), kernels_dir, attention="torch", dtype="bf16",
                         lengths=LONG)
    for p, t, (n_in, n_out) in zip(paged, plain, LONG):
        assert len(p.output) == n_out == len(t.output)
        lp = np.stack(p.logits)
        tol = 3e-2 * np.abs(lp).max()  # bf16 keeps 8 bits of mantissa: ties are wider than in fp16
        assert _same_greedy_path(p.output, t.output, lp, tol), f"request {p.id}: paged kernel != torch attention"
        ref = reference_logits(config, weights, p.prompt + p.output[:-1])[n_in - 1:]
        err = np.linalg.norm(lp - ref) / np.linalg.norm(ref)
        assert err < 3e-2, f"request {p.id} ({n_in} prompt tokens): relative logit error {err:.2e}"
        top2 = np.sort(ref, axis=-1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) > tol
        assert (np.asarray(p.output)[decided] == ref.argmax(axis=-1)[decided]).all()
