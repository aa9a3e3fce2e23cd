"""Checkpoints: PEFT compatibility, exact resume, sampler checkpoints, merged export, atomicity."""

from __future__ import annotations

import json

import pytest
import torch

from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY


def _train(engine, run, datums, steps):
    losses = []
    for _ in range(steps):
        losses.append(engine.forward_backward(run, datums).loss_sum)
        engine.optim_step(run)
    return losses


def test_the_adapter_loads_in_peft_and_gives_the_engines_logits(engine, make_run, datums, tmp_path):
    """PEFT's logits on the exported adapter equal the engine's within 1e-4 (fp32)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from frontier_signal.backend.models import save_tiny_model

    run = make_run(target_modules=("q_proj", "v_proj", "down_proj", "lm_head"), rank=4)
    _train(engine, run, datums, 3)
    engine.save_checkpoint(run, tmp_path / "adapter", kind="sampler")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4

    base = AutoModelForCausalLM.from_pretrained(save_tiny_model(tmp_path / "base"))
    peft_model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    tokens = datums[2].input_tokens
    with torch.no_grad():
        logits = peft_model(input_ids=torch.tensor([tokens])).logits[0].float()
    peft_logprobs = (
        logits.log_softmax(-1)
        .gather(-1, torch.tensor(datums[2].target_tokens)[:, None])
        .squeeze(-1)
    )
    ours = engine.forward(run, [datums[2]]).logprobs[0]
    assert peft_logprobs.tolist() == pytest.approx(ours, abs=1e-4)


def test_save_load_and_continue_reproduces_uninterrupted_training(
    engine, make_run, datums, tmp_path
):
    straight = make_run(seed=5)
    expected = _train(engine, straight, datums, 5)

    first = make_run(seed=5)
    _train(engine, first, datums, 2)
    info = engine.save_checkpoint(first, tmp_path / "ckpt", kind="training")
    assert info.step == 2 and info.size_bytes > 0
    resumed = engine.create_run_from_checkpoint(tmp_path / "ckpt").run_id
    try:
        assert engine.get_run(resumed).step == 2
        assert _train(engine, resumed, datums, 3) == pytest.approx(expected[2:], rel=1e-5)
    finally:
        engine.delete_run(resumed)


def test_loading_into_an_existing_run_takes_the_checkpoints_layout(
    engine, make_run, datums, tmp_path
):
    source = make_run(rank=8, target_modules=("q_proj", "lm_head"))
    _train(engine, source, datums, 2)
    engine.save_checkpoint(source, tmp_path / "ckpt")
    target = make_run(rank=2, target_modules=("k_proj",))
    info = engine.load_checkpoint(target, tmp_path / "ckpt")
    assert info.config.lora.rank == 8 and info.step == 2
    assert set(info.config.lora.target_modules) == {"q_proj", "lm_head"}
    flat = lambda run: [x for row in engine.forward(run, datums).logprobs for x in row]  # noqa: E731
    assert flat(target) == pytest.approx(flat(source), abs=1e-6)


def test_sampler_checkpoints_sample_like_the_run_they_came_from(
    engine, make_run, datums, tokenizer, tmp_path
):
    run = make_run()
    _train(engine, run, datums, 3)
    engine.save_checkpoint(run, tmp_path / "sampler", kind="sampler")
    assert not (tmp_path / "sampler" / "optimizer.safetensors").exists()
    prompt = tokenizer("The capital", add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=6, temperature=0)
    from_run = engine.sample(SampleRequest(run, prompt, params))
    _train(engine, run, datums, 2)  # the run moves on; the checkpoint does not
    from_ckpt = engine.sample(
        SampleRequest(TINY, prompt, params, checkpoint=str(tmp_path / "sampler"))
    )
    assert from_ckpt.sequences[0].logprobs == pytest.approx(
        from_run.sequences[0].logprobs, abs=1e-5
    )


def test_per_step_copies_of_a_bf16_run_are_its_bf16_weights_and_sample_like_it(
    datums, tokenizer, tmp_path
):
    from safetensors.torch import load_file

    from frontier_signal.backend.checkpoints import ADAPTER_WEIGHTS, OPTIMIZER, folder_digest
    from frontier_signal.engine.engine import Engine
    from tests.conftest import make_config

    engine = Engine(device="cpu", dtype="bfloat16")
    run = engine.create_run(make_config()).run_id
    _train(engine, run, datums, 2)
    copy = engine.save_checkpoint(run, tmp_path / "step", kind="sampler", compact=True)
    full = engine.save_checkpoint(run, tmp_path / "full", kind="sampler")
    resume = engine.save_checkpoint(run, tmp_path / "train", kind="training", compact=True)
    # The forward and the decode use the bf16 casts of the fp32 master weights: that is the copy.
    params = dict(engine._run(run).adapter.named_parameters())
    for name, value in load_file(str(tmp_path / "step" / ADAPTER_WEIGHTS)).items():
        assert value.dtype == torch.bfloat16 and torch.equal(value, params[name].bfloat16())
    assert {v.dtype for v in load_file(str(tmp_path / "full" / ADAPTER_WEIGHTS)).values()} == {
        torch.float32
    }
    assert {v.dtype for v in load_file(str(tmp_path / "train" / ADAPTER_WEIGHTS)).values()} == {
        torch.float32
    }  # a training checkpoint resumes exactly: never compact
    assert (tmp_path / "train" / OPTIMIZER).exists()
    for info in (copy, full, resume):  # hashed while it was synced, as a reader would hash it
        assert (info.size_bytes, info.sha256) == folder_digest(tmp_path / info.path)
    prompt = tokenizer("The capital", add_special_tokens=False)["input_ids"]
    sampling = SamplingParams(max_tokens=6, temperature=0)
    from_run = engine.sample(SampleRequest(run, prompt, sampling))
    from_copy = engine.sample(
        SampleRequest(TINY, prompt, sampling, checkpoint=str(tmp_path / "step"))
    )
    assert from_copy.sequences[0].tokens == from_run.sequences[0].tokens
    assert from_copy.sequences[0].logprobs == from_run.sequences[0].logprobs


def test_merged_export_loads_in_transformers_and_matches_the_run(
    engine, make_run, datums, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = make_run(target_modules=("q_proj", "up_proj", "lm_head"))
    _train(engine, run, datums, 2)
    engine.export_merged(run, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template
    tokens = datums[0].input_tokens
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens])).logits[0]
    merged = logits.log_softmax(-1).gather(-1, torch.tensor(datums[0].target_tokens)[:, None])
    assert merged.squeeze(-1).tolist() == pytest.approx(
        engine.forward(run, [datums[0]]).logprobs[0], abs=1e-4
    )


def test_a_failed_write_leaves_the_previous_checkpoint_intact(
    engine, make_run, datums, tmp_path, monkeypatch
):
    from frontier_signal.backend import checkpoints

    run = make_run()
    _train(engine, run, datums, 1)
    engine.save_checkpoint(run, tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "adapter_model.safetensors").read_bytes()
    _train(engine, run, datums, 1)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoints, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        engine.save_checkpoint(run, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folders left


def test_a_missing_or_foreign_checkpoint_is_a_clear_not_found(engine, make_run, tmp_path):
    from frontier_signal.engine.errors import CheckpointNotFoundError

    run = make_run()
    with pytest.raises(CheckpointNotFoundError, match="no adapter checkpoint"):
        engine.load_checkpoint(run, tmp_path / "nope")
    assert engine.get_run(run).step == 0
