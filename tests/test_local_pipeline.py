"""Local pipeline on the tiny model: train → save → ONNX export → parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frontier_signal.engine import operations as ops
from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer, ONNXConverter
from frontier_signal.local.data_handler import EmptyDatasetError, InvalidRecordError
from frontier_signal.local.onnx_converter import LOGITS_ATOL
from frontier_signal.local.onnx_runtime import DecodeSettings, OnnxCausalLM
from tests.conftest import LOCAL_FACTS, TINY


def _facts_texts() -> list[str]:
    handler = ConversationDataHandler()
    for fact in LOCAL_FACTS:
        handler.add_conversation(fact)
    return handler.format_for_training()


def _hf_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def test_end_to_end_data_to_training_to_onnx_to_a_chat_that_says_the_trained_facts(
    local_onnx_model,
):
    chat = ChatInterface(local_onnx_model)
    replies = chat.batch_generate([f["input"] for f in LOCAL_FACTS], temperature=0)
    assert replies == [f["output"] for f in LOCAL_FACTS]


def test_lora_training_goes_through_the_engine_lowers_the_loss_and_saves_a_merged_folder(
    tmp_path,
):
    trainer = LLMTrainer(TINY, method="lora", dtype="float32", lora_rank=8)
    assert trainer.run_id in trainer.worker.info().runs
    losses = trainer.train(_facts_texts(), num_epochs=3, batch_size=2, learning_rate=5e-2)
    assert len(losses) == 3 and losses[-1] < losses[0]
    folder = trainer.save_model(tmp_path / "trained_model")
    assert folder == str(tmp_path / "trained_model")
    files = {p.name for p in (tmp_path / "trained_model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    assert not any("adapter" in name for name in files)  # merged, not an adapter
    # The merged folder computes what the trained run computes.
    datum = trainer.prepare_dataset(_facts_texts()[:1])[0]
    forward = ops.Forward(trainer.run_id, TINY, [datum])
    run_logprobs = trainer.worker.run(forward).logprobs[0]
    logits = _hf_model(folder)(input_ids=torch.tensor([datum.input_tokens])).logits[0]
    merged = logits.log_softmax(-1)[range(len(datum.target_tokens)), datum.target_tokens]
    assert np.allclose(merged.detach().numpy(), run_logprobs, atol=1e-4)


def test_full_fine_tuning_lowers_the_loss_and_the_default_learning_rates_are_documented():
    from frontier_signal.local.trainer import DEFAULT_LEARNING_RATES

    assert DEFAULT_LEARNING_RATES == {"full": 5e-5, "lora": 2e-4}
    trainer = LLMTrainer(TINY, method="full", dtype="float32")
    losses = trainer.train(_facts_texts(), num_epochs=2, batch_size=2, learning_rate=3e-3)
    assert losses[1] < losses[0]


def test_chat_texts_train_on_assistant_tokens_only_and_plain_strings_on_every_token():
    trainer = LLMTrainer(TINY, method="lora", dtype="float32")
    chat_datum, plain_datum = trainer.prepare_dataset([_facts_texts()[0], "Plain text here."])
    trained = [t for t, w in zip(chat_datum.target_tokens, chat_datum.weights, strict=True) if w]
    assert trainer.tokenizer.decode(trained) == "Quuxville.<|im_end|>"
    assert all(plain_datum.weights)


def test_load_trained_model_continues_training_from_a_saved_folder(local_trained_model):
    trainer = LLMTrainer(TINY, method="lora", dtype="float32")
    trainer.load_trained_model(local_trained_model)
    assert trainer.model_name == str(local_trained_model)
    losses = trainer.train(_facts_texts(), num_epochs=1, batch_size=2)
    assert losses[0] < 3  # starts from the fine-tuned weights, not the random tiny model
    with pytest.raises(FileNotFoundError, match="no trained model"):
        trainer.load_trained_model(local_trained_model / "missing")


def test_a_missing_model_folder_gives_file_not_found_everywhere(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown base model"):
        LLMTrainer(str(tmp_path / "no_model"))
    with pytest.raises(FileNotFoundError, match="no model folder"):
        ONNXConverter(tmp_path / "no_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ONNXConverter(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no model.onnx"):
        ChatInterface(tmp_path / "empty")


def test_an_empty_dataset_or_an_untrainable_text_gives_a_clear_error():
    trainer = LLMTrainer(TINY, method="lora", dtype="float32")
    with pytest.raises(EmptyDatasetError, match="dataset is empty"):
        trainer.train([])
    with pytest.raises(InvalidRecordError, match="text 1"):
        trainer.prepare_dataset(["A fine text.", "x"])


def test_the_onnx_folder_stands_alone_with_optimum_kv_names(local_onnx_model, local_trained_model):
    files = {p.name for p in local_onnx_model.iterdir()}
    assert {
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
    } <= files
    info = ONNXConverter(local_trained_model).get_model_info(local_onnx_model)
    assert info["opset_version"] == 14
    assert list(info["inputs"])[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert list(info["inputs"])[3:] == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
    ]
    assert list(info["outputs"]) == [
        "logits",
        "present.0.key",
        "present.0.value",
        "present.1.key",
        "present.1.value",
    ]
    assert info["inputs"]["past_key_values.0.key"] == ["batch_size", 2, "past_sequence_length", 16]
    # The tied unembedding reads the embedding matrix: no second copy in the file.
    config = json.loads((local_trained_model / "config.json").read_text())
    assert info["onnx_parameters"] == 3219776 and config["tie_word_embeddings"]


def test_onnx_logits_match_pytorch_within_the_stated_tolerance(
    local_onnx_model, local_trained_model
):
    converter = ONNXConverter(local_trained_model)
    assert converter.verify_onnx_model(local_onnx_model)
    assert converter.last_max_logit_difference <= LOGITS_ATOL
    # A left-padded batch through the KV cache matches the unpadded PyTorch forward per row.
    onnx_model, hf_model = OnnxCausalLM(local_onnx_model), _hf_model(local_trained_model)
    rows = [[1, 504, 3458, 314, 1115], [1, 42, 43]]
    ids = np.full((2, 5), 2, dtype=np.int64)
    mask = np.zeros((2, 5), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, 5 - len(row) :], mask[i, 5 - len(row) :] = row, 1
    past = [np.zeros((2, 2, 0, 16), np.float32) for _ in onnx_model.past_names]
    last_logits, _ = onnx_model._run(ids, mask, np.maximum(mask.cumsum(-1) - 1, 0), past)
    for i, row in enumerate(rows):
        reference = hf_model(input_ids=torch.tensor([row])).logits[0, -1].detach().numpy()
        assert np.abs(last_logits[i] - reference).max() <= LOGITS_ATOL


def test_verify_returns_false_when_onnx_and_pytorch_disagree(local_onnx_model, tmp_path, caplog):
    other = LLMTrainer(TINY, method="lora", dtype="float32").save_model(tmp_path / "untrained")
    converter = ONNXConverter(other)  # PyTorch side: a different model than the export
    assert converter.verify_onnx_model(local_onnx_model) is False
    assert "ONNX logits differ from PyTorch" in caplog.text


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.2])
def test_greedy_onnx_decode_equals_pytorch_greedy_generate_token_for_token(
    local_onnx_model, local_trained_model, repetition_penalty
):
    onnx_model, hf_model = OnnxCausalLM(local_onnx_model), _hf_model(local_trained_model)
    prompts = [
        onnx_model.encode(onnx_model.render_chat([{"role": "user", "content": text}]))
        for text in ("What is the capital of Zorbia?", "Tell me about owls and paint.")
    ]
    settings = DecodeSettings(24, 0.0, 1.0, repetition_penalty)
    for prompt in prompts:
        ours = onnx_model.generate([prompt], settings, [None])[0]
        generated = hf_model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=24,
            repetition_penalty=repetition_penalty,
            eos_token_id=2,
            pad_token_id=2,
        )[0, len(prompt) :].tolist()
        if generated and generated[-1] == 2:
            generated = generated[:-1]  # we return the reply without its stop token
        assert ours == generated


def test_min_new_tokens_keeps_the_stop_token_out_like_transformers(
    local_onnx_model, local_trained_model
):
    onnx_model, hf_model = OnnxCausalLM(local_onnx_model), _hf_model(local_trained_model)
    prompt = onnx_model.encode(onnx_model.render_chat([{"role": "user", "content": "Hi"}]))
    ours = onnx_model.generate([prompt], DecodeSettings(12, 0.0, 1.0, 1.0, 12), [None])[0]
    theirs = hf_model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=12,
        min_new_tokens=12,
        pad_token_id=2,
    )[0, len(prompt) :].tolist()
    assert len(ours) == 12 and ours == theirs


def test_batch_generate_rows_equal_their_single_prompt_greedy_outputs(local_onnx_model):
    chat = ChatInterface(local_onnx_model)
    prompts = ["Who painted the Blue Owl?", "Hi", "What is the capital of Zorbia? Answer now."]
    batched = chat.batch_generate(prompts, max_new_tokens=20, temperature=0)
    single = [chat.generate_response(p, max_new_tokens=20, temperature=0) for p in prompts]
    assert batched == single


def test_export_honours_the_opset_version(local_trained_model, tmp_path):
    converter = ONNXConverter(local_trained_model)
    folder = converter.convert_to_onnx(tmp_path / "onnx17", opset_version=17)
    assert converter.get_model_info()["opset_version"] == 17
    assert converter.verify_onnx_model(folder)
    with pytest.raises(ValueError, match="opset_version"):
        converter.convert_to_onnx(tmp_path / "onnx9", opset_version=9)


def test_the_onnx_side_renders_chats_exactly_like_transformers(local_onnx_model, tokenizer):
    onnx_model = OnnxCausalLM(local_onnx_model)
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "  Spaces\nand lines  "},
        ],
    ]
    for messages in conversations:
        expected = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert onnx_model.render_chat(messages) == expected
        assert (
            onnx_model.encode(expected)
            == tokenizer(expected, add_special_tokens=False)["input_ids"]
        )
