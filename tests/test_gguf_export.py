"""GGUF export: the files llama.cpp reads, and llama.cpp's logits on them against our engine's.

The run trains every target module (lm_head too, on a tied model) until it says its text back,
so the adapter is far from zero and greedy decoding is not a coin toss between near-equal logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import TINY, make_config
from tests.gguf_support import TOLERANCE, greedy, load, require_llama_cpp, sequence_logprobs

TEXT = "The capital of Zorbia is Quuxville, a city of blue towers and quiet canals."
PROBE = "Frontier Signal trains LoRA adapters on a small machine."
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def trained(engine):
    config = make_config(target_modules=(*ALL_TARGETS, "lm_head"), learning_rate=1e-2)
    run = engine.create_run(config).run_id
    datum = engine.render(TINY, [{"text": TEXT}], 64)[0].datum
    for _ in range(30):
        engine.forward_backward(run, [datum])
        engine.optim_step(run)
    yield run
    engine.delete_run(run)


@pytest.fixture(scope="module", params=["f16", "q8_0"])
def exported(request, engine, trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf") / request.param
    files = engine.export_gguf(trained, folder, request.param)
    return request.param, folder, files


def _tokens(engine, text: str) -> list[int]:
    datum = engine.render(TINY, [{"text": text}], 64)[0].datum
    return datum.input_tokens + datum.target_tokens[-1:]


def _engine_logprobs(engine, run, text: str) -> list[float]:
    datum = engine.render(TINY, [{"text": text}], 64)[0].datum
    return engine.forward(run, [datum]).logprobs[0]


def test_the_folder_holds_merged_base_and_adapter_with_their_metadata(exported, engine):
    from gguf import GGUFReader

    qtype, folder, files = exported
    assert set(files) == {
        f"model-{qtype}.gguf",
        f"base-{qtype}.gguf",
        "adapter-lora.gguf",
        "Modelfile",
        "frontier_signal.json",
    }
    assert all(files[name] == (folder / name).stat().st_size > 0 for name in files)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    merged = GGUFReader(str(folder / f"model-{qtype}.gguf"))
    fields = {key: merged.fields[key].contents() for key in merged.fields if "ggml.t" not in key}
    tokenizer = engine.tokenizer(TINY)
    assert fields["general.architecture"] == "llama" and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "smollm"
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert len(merged.fields["tokenizer.ggml.tokens"].data) == 49152
    names = {t.name for t in merged.tensors}
    assert "output.weight" in names  # lm_head was trained: the merged model unties it
    adapter = GGUFReader(str(folder / "adapter-lora.gguf"))
    assert adapter.fields["general.type"].contents() == "adapter"
    assert adapter.fields["adapter.type"].contents() == "lora"
    assert adapter.fields["adapter.lora.alpha"].contents() == 8.0
    lora = {t.name: t for t in adapter.tensors}
    assert {"blk.1.attn_k.weight.lora_a", "output.weight.lora_b"} <= set(lora)
    assert list(lora["blk.0.ffn_down.weight.lora_a"].shape) == [128, 4]  # ggml order: in, rank
    assert json.loads((folder / "frontier_signal.json").read_text())["gguf_type"] == qtype
    assert f"FROM ./model-{qtype}.gguf" in (folder / "Modelfile").read_text()


def test_q_and_k_rows_are_in_llama_cpp_order(exported, engine, trained):
    """Undoing llama.cpp's interleaving on the stored f16 attn_q/attn_k gives our merged weights."""
    from gguf import GGUFReader

    from frontier_signal.backend.checkpoints import merged_model
    from frontier_signal.backend.gguf_export import permute_rows

    qtype, folder, _ = exported
    if qtype != "f16":
        pytest.skip("exact layout checked on f16")
    model = merged_model(TINY, engine._run(trained).adapter)
    stored = {t.name: t for t in GGUFReader(str(folder / "model-f16.gguf")).tensors}
    for name, heads in (("q_proj", 4), ("k_proj", 2)):
        ours = model.get_submodule(f"model.layers.1.self_attn.{name}").weight
        data = torch.from_numpy(np.array(stored[f"blk.1.attn_{name[0]}.weight"].data)).float()
        assert not torch.allclose(permute_rows(ours, heads), ours)
        assert torch.allclose(data, permute_rows(ours, heads), atol=1e-3)


def test_the_merged_gguf_in_llama_cpp_gives_our_logprobs_and_greedy_tokens(
    exported, engine, trained
):
    qtype, folder, _ = exported
    llm = load(folder / f"model-{qtype}.gguf")
    tokenizer = engine.tokenizer(TINY)
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == _tokens(engine, TEXT)
    diffs = []
    for text in (TEXT, PROBE):
        ours = _engine_logprobs(engine, trained, text)
        theirs = sequence_logprobs(llm, _tokens(engine, text))
        diffs.append(np.abs(np.array(ours) - np.array(theirs)).max())
    assert max(diffs) < TOLERANCE[qtype], diffs
    prompt = _tokens(engine, TEXT)[:5]
    params = SamplingParams(max_tokens=16, temperature=0.0)
    ours = engine.sample(SampleRequest(model=trained, prompt_tokens=prompt, params=params))
    theirs, _ = greedy(llm, prompt, 16, {tokenizer.eos_token_id})
    assert len(theirs) == 16 and theirs == ours.sequences[0].tokens


def test_base_gguf_plus_lora_gguf_in_llama_cpp_gives_our_logprobs(exported, engine, trained):
    qtype, folder, _ = exported
    if qtype != "f16":
        pytest.skip("the adapter is f32 whatever the type; checked once, on the f16 base")
    llm = load(folder / "base-f16.gguf", lora_path=folder / "adapter-lora.gguf")
    plain = load(folder / "base-f16.gguf")
    tokens = _tokens(engine, TEXT)
    ours = np.array(_engine_logprobs(engine, trained, TEXT))
    with_lora, without = sequence_logprobs(llm, tokens), sequence_logprobs(plain, tokens)
    assert np.abs(ours - np.array(with_lora)).max() < TOLERANCE["lora"]
    assert np.abs(ours - np.array(without)).max() > 1.0  # the adapter really changed them


def test_gguf_export_refuses_an_unknown_type(engine, trained, tmp_path):
    from frontier_signal.engine.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="f16, q8_0"):
        engine.export_gguf(trained, tmp_path / "x", "q4_k")
    assert not (tmp_path / "x").exists()


def test_the_llama_cpp_requirement_is_enforced_in_ci(monkeypatch):
    """With FRONTIER_SIGNAL_REQUIRE_LLAMA_CPP=1 a missing llama_cpp fails instead of skipping."""
    import sys

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import raises ImportError
    monkeypatch.setenv("FRONTIER_SIGNAL_REQUIRE_LLAMA_CPP", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_LLAMA_CPP"):
        require_llama_cpp()
    monkeypatch.delenv("FRONTIER_SIGNAL_REQUIRE_LLAMA_CPP")
    with pytest.raises(pytest.skip.Exception):
        require_llama_cpp()


def test_the_export_command_writes_gguf_or_merged_folders_from_a_checkpoint(
    engine, trained, tmp_path
):
    from typer.testing import CliRunner

    from frontier_signal.cli import app

    engine.save_checkpoint(trained, tmp_path / "ckpt", kind="sampler")
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "model-f16.gguf" in result.output and "adapter-lora.gguf" in result.output
    merged = runner.invoke(
        app, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "m"), "--format", "merged"]
    )
    assert merged.exit_code == 0 and (tmp_path / "m" / "config.json").exists()
    again = runner.invoke(app, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "g")])
    assert again.exit_code == 2 and "not an empty folder" in again.output
    bad = runner.invoke(
        app, ["export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "x"), "--format", "onnx"]
    )
    assert bad.exit_code == 2 and "gguf or merged" in bad.output
    missing = runner.invoke(app, ["export", str(tmp_path / "nope"), "-o", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "no adapter checkpoint" in missing.output


def test_gguf_export_refuses_weights_float16_cannot_hold(engine, make_run, tmp_path):
    """SGD at lr 1 on huge loss weights leaves finite fp32 weights past float16's range: the
    export says so (a 400 through the API) instead of writing inf into the file."""
    from frontier_signal.engine.errors import InvalidInputError
    from frontier_signal.engine.types import Datum

    run = make_run(optimizer="sgd", learning_rate=1.0)
    tokens = list(range(5, 40))
    for _ in range(2):
        engine.forward_backward(run, [Datum(tokens[:-1], tokens[1:], [1e12] * 34)])
        engine.optim_step(run)
    for qtype in ("f16", "q8_0"):
        with pytest.raises(InvalidInputError, match=f"beyond what GGUF {qtype} can hold"):
            engine.export_gguf(run, tmp_path / qtype, qtype)
        assert not (tmp_path / qtype).exists()
