"""The C++ decode layers (backend/native.py, csrc/llama_step.cpp) against the Python step they
replace: same cache, same tokens fed to both, step by step, in the exact-bf16, GGUF 4-bit and
int8 modes, with several runs of different ranks and the bare model in one left-padded batch."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from frontier_signal.backend import llama_decode, native
from frontier_signal.backend.decode_lora import GROUPS
from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY, make_config
from tests.test_decode_4bit import install_q4_1

PROMPTS = [[5, 9, 200, 31, 7], [11, 3, 400, 17, 8, 90, 4], [60, 2, 9]]


@pytest.fixture
def ops(native_ops):
    return native_ops


@pytest.fixture(scope="module")
def engine_base():
    """A bf16 engine on the tiny model with Q4_1 weights (packed 4-bit as well) and three runs
    of ranks 4, 8 and 4 whose B matrices are off zero. Their weights are bf16 values, so the
    native step's bf16 terms and the Python step's fp32 ones hold the same numbers (this random
    model amplifies a rounding of its LoRA weights into other tokens now and then)."""
    from frontier_signal.engine.engine import Engine

    engine = Engine(device="cpu", dtype="bfloat16")
    base = engine.load_model(TINY)
    assert install_q4_1(base, seed=100) == len(base.model.model.layers) * len(GROUPS)
    base.decode_weights().quantize_int8()  # the opt-in int8 mode's weights too
    runs = []
    for seed, rank in enumerate((4, 8, 4)):
        run = engine.create_run(make_config(rank=rank, alpha=2 * rank)).run_id
        generator = torch.Generator().manual_seed(rank + seed)
        with torch.no_grad():
            for linear in base.layers.values():
                pair = linear.adapters.get(run)
                if pair is not None:
                    noise = torch.randn(pair.lora_B.shape, generator=generator) * 0.05
                    pair.lora_B.copy_(noise.bfloat16())
                    pair.lora_A.copy_(pair.lora_A.bfloat16())
        runs.append(run)
    yield engine, base, runs
    for run in runs:
        engine.delete_run(run)


def _left_padded_cache(base, keys: list[str], prompts=PROMPTS) -> DynamicCache:
    """Each prompt's own prefill (with its run's adapter), left-padded into one batch cache."""
    width = max(len(p) for p in prompts)
    caches = []
    for prompt, key in zip(prompts, keys, strict=True):
        with torch.no_grad(), base.routing.use([(key, 0, 1)]):
            cache = DynamicCache(config=base.model.config)
            base.model(torch.tensor([prompt]), past_key_values=cache, use_cache=True)
        caches.append(cache)
    batch = DynamicCache(config=base.model.config)
    for layer in range(len(base.model.model.layers)):
        pad = [width - len(p) for p in prompts]
        keys_, values = (
            torch.cat([torch.nn.functional.pad(getattr(c.layers[layer], kind), (0, 0, n, 0))
                       for c, n in zip(caches, pad, strict=True)])
            for kind in ("keys", "values")
        )  # fmt: skip
        batch.update(keys_, values, layer)
    return batch


def _decoder(base, cache, segments, mode: str, use_native: bool, monkeypatch, prompts=PROMPTS):
    with monkeypatch.context() as patch:
        if not use_native:
            patch.setattr(native, "ops", lambda wait=True: None)
        decoder = llama_decode.LlamaDecoder(
            base.decode_weights(), cache, [len(p) for p in prompts], 16, segments, mode
        )
    assert (decoder.native is not None) == use_native
    return decoder


@pytest.mark.parametrize("mode", ["exact", "4bit", "int8"])
def test_the_native_layers_give_the_python_steps_logits(ops, engine_base, mode, monkeypatch):
    engine, base, (run4, run8, _) = engine_base
    keys = [run8, run4, "bare"]  # two ranks and the bare model, rows of different lengths
    segments = [(run8, 0, 1), (run4, 1, 2), ("bare", 2, 3)]
    cache = _left_padded_cache(base, keys)
    ours = _decoder(base, cache, segments, mode, True, monkeypatch)
    theirs = _decoder(base, cache, segments, mode, False, monkeypatch)
    _assert_same_steps(ours, theirs)


def _assert_same_steps(ours, theirs, steps: int = 12) -> None:
    """Both decoders fed the same tokens give the same logits up to bf16 rounding."""
    tokens = torch.randint(
        0, 1000, (steps, len(PROMPTS)), generator=torch.Generator().manual_seed(1)
    )
    for step, ids in enumerate(tokens):
        got, want = ours.step(ids), theirs.step(ids)
        scale = want.abs().max()
        # Sums in another order round to bf16 differently now and then: a few bf16 steps.
        assert (got - want).abs().max() <= 0.03 * scale, f"step {step}"
        assert torch.equal(got.argmax(-1), want.argmax(-1)), f"step {step}"
    # Both wrote the same keys and values into their caches (the slots in use).
    written = slice(0, ours.length)
    got_kv, want_kv = ours.kv[..., written, :].float(), theirs.kv[..., written, :].float()
    assert (got_kv - want_kv).abs().max() <= 0.03 * want_kv.abs().max()


def test_twelve_query_heads_on_one_kv_head(ops, tmp_path, monkeypatch):
    """Multi-query attention, 12 heads on one KV head: more heads than one pass of the native
    attention takes (8), split between tasks. Its logits are the Python step's."""
    from transformers import AutoModelForCausalLM

    from frontier_signal.backend import models
    from frontier_signal.engine.engine import Engine

    config = models.tiny_llama_config()
    config.hidden_size, config.num_attention_heads, config.num_key_value_heads = 192, 12, 1
    folder = tmp_path / "multi-query"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    models.load_tokenizer(TINY).save_pretrained(folder)
    base = Engine(device="cpu", dtype="bfloat16").load_model(str(folder))
    cache = _left_padded_cache(base, ["bare"] * len(PROMPTS))
    segments = [("bare", 0, len(PROMPTS))]
    ours = _decoder(base, cache, segments, "exact", True, monkeypatch)
    theirs = _decoder(base, cache, segments, "exact", False, monkeypatch)
    _assert_same_steps(ours, theirs)  # up to 19 keys: two vectors of e^x


def test_the_adapters_move_the_native_logits(ops, engine_base, monkeypatch):
    """A run's LoRA terms are applied (not silently skipped): its logits differ from the bare
    model's on the same cache by what the Python step's differ."""
    engine, base, (run4, *_) = engine_base
    cache = _left_padded_cache(base, [run4] * 3)
    ids = torch.tensor([3, 4, 5])
    with_run = _decoder(base, cache, [(run4, 0, 3)], "exact", True, monkeypatch).step(ids)
    bare = _decoder(base, cache, [("bare", 0, 3)], "exact", True, monkeypatch).step(ids)
    python = _decoder(base, cache, [(run4, 0, 3)], "exact", False, monkeypatch).step(ids)
    moved = (with_run - bare).abs().max()
    assert moved > 10 * (with_run - python).abs().max()


def _skip_without_row_invariant_kernels(ops) -> None:
    """A row's values equal alone and in a batch only through our AVX512-BF16 kernels."""
    if not ops.has_bf16_kernel():
        pytest.skip("ATen's int4 matmul, used without AVX512-BF16, sums by the row count")


def test_many_rows_of_one_run_decode_as_each_alone(ops, engine_base, monkeypatch):
    """Eleven rows on one run (a full 8-row pass of the LoRA kernels and a partial one) share
    each widened adapter vector; every row still gets bit for bit what it gets alone."""
    _skip_without_row_invariant_kernels(ops)
    engine, base, (run4, *_) = engine_base
    prompts = [[7 + i, 40 * i + 3, 5, 900 - i, 11][: 2 + i % 4] for i in range(11)]
    ids = torch.randint(0, 1000, (3, len(prompts)), generator=torch.Generator().manual_seed(2))

    def steps(rows: list[int]) -> torch.Tensor:
        chosen = [prompts[i] for i in rows]
        cache = _left_padded_cache(base, [run4] * len(rows), chosen)
        segments = [(run4, 0, len(rows))]
        decoder = _decoder(base, cache, segments, "4bit", True, monkeypatch, chosen)
        return torch.stack([decoder.step(step[rows]) for step in ids], dim=1)

    together = steps(list(range(len(prompts))))
    for i in range(len(prompts)):
        assert torch.equal(together[i], steps([i])[0]), f"row {i}"


def test_runs_of_one_shape_decode_together_as_each_alone(ops, engine_base, monkeypatch):
    """Two runs of one rank, a row each: on two threads each takes one run's LoRA terms through
    both passes (`evenly_shared` in csrc/decode_lora.cpp), and each row still gets bit for bit
    what it gets alone (where a run's terms go through the two split passes)."""
    _skip_without_row_invariant_kernels(ops)
    if torch.get_num_threads() < 2:
        pytest.skip("whole terms a thread need two threads")
    engine, base, (first, _, second) = engine_base
    ids = torch.randint(0, 1000, (3, 2), generator=torch.Generator().manual_seed(4))

    def steps(keys: list[str], rows: list[int]) -> torch.Tensor:
        chosen = [PROMPTS[i] for i in rows]
        cache = _left_padded_cache(base, keys, chosen)
        segments = [(key, i, i + 1) for i, key in enumerate(keys)]
        decoder = _decoder(base, cache, segments, "4bit", True, monkeypatch, chosen)
        return torch.stack([decoder.step(step[rows]) for step in ids], dim=1)

    together = steps([first, second], [0, 1])
    assert torch.equal(together[0], steps([first], [0])[0])
    assert torch.equal(together[1], steps([second], [1])[0])
    assert not torch.equal(together[0], steps([second], [0])[0])  # the runs differ


def test_sampling_decodes_through_the_native_layers(ops, engine_base, monkeypatch):
    engine, base, (run4, *_) = engine_base
    calls = []
    original = native.NativeStep.__call__

    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(native.NativeStep, "__call__", counted)
    params = SamplingParams(max_tokens=6, temperature=0, top_logprobs=5)
    fast = engine.sample(SampleRequest(run4, PROMPTS[1], params)).sequences[0]
    assert len(calls) == 5  # every token after the prefill's first
    monkeypatch.setattr(native, "ops", lambda wait=True: None)
    slow = engine.sample(SampleRequest(run4, PROMPTS[1], params)).sequences[0]
    assert fast.tokens == slow.tokens
    assert fast.logprobs == pytest.approx(slow.logprobs, abs=0.05)


@pytest.mark.parametrize("rows", [1, 3, 8, 19, 25])
@pytest.mark.parametrize("K", [64, 100])
def test_the_native_linear_gives_atens(ops, rows, K):
    """Our bf16 matrix-vector kernel (8 rows a pass, up to 24 rows where the CPU has
    AVX512-BF16; ATen's linear otherwise and beyond): the same outputs within one bf16 rounding,
    odd sizes and a bias."""
    generator = torch.Generator().manual_seed(K + rows)
    x = torch.randn(rows, K, generator=generator).bfloat16()
    weight = torch.randn(37, K, generator=generator).bfloat16()
    bias = torch.randn(37, generator=generator).bfloat16()
    for b in (None, bias):
        got = ops.linear(x, weight, b).float()
        exact = x.float() @ weight.float().T + (0 if b is None else b.float())
        # Our kernel adds the bias before its one rounding, ATen after: within 2 bf16 steps.
        assert (got - exact).abs().max() <= 2 * 2**-8 * exact.abs().max()
        assert got.shape == (rows, 37)
