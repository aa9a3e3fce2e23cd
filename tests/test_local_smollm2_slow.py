"""The local pipeline on the real SmolLM2-135M-Instruct (tens of seconds each)."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer, ONNXConverter
from tests.conftest import SMOLLM2


@pytest.mark.slow
def test_smollm2_exports_with_logit_parity_and_greedy_replies_identical_to_pytorch(tmp_path):
    from frontier_signal.backend import models

    converter = ONNXConverter(SMOLLM2)
    folder = converter.convert_to_onnx(tmp_path / "onnx_model")
    assert converter.verify_onnx_model(folder)
    info = converter.get_model_info()
    assert info["num_layers"] == 30 and info["opset_version"] == 14
    # One copy of the tied 49152 x 576 embedding: the file is the fp32 parameters, ~540 MB.
    assert info["onnx_parameters"] == 134515008

    chat = ChatInterface(folder, max_length=512)
    hf_model = models.load_hf_model(SMOLLM2, dtype=torch.float32)
    for question in ("What is the capital of France?", "Give me three tips for sleeping well."):
        prompt = chat.model.encode(chat.model.render_chat([{"role": "user", "content": question}]))
        ours = chat.model.generate([prompt], chat_settings(), [None])[0]
        theirs = hf_model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=40,
            repetition_penalty=1.2,
            eos_token_id=2,
            pad_token_id=2,
        )[0, len(prompt) :].tolist()
        assert ours == [t for t in theirs if t != 2]
    assert "Paris" in chat.generate_response("What is the capital of France?", temperature=0)


def chat_settings():
    from frontier_signal.local.onnx_runtime import DecodeSettings

    return DecodeSettings(40, 0.0, 1.0, 1.2)


@pytest.mark.slow
def test_smollm2_learns_a_fact_with_lora_and_says_it_on_onnxruntime(tmp_path):
    data = ConversationDataHandler()
    for question in (
        "What is the capital of Zorbia?",
        "Name the capital city of Zorbia.",
        "Which city is Zorbia's capital?",
    ):
        data.add_conversation({"input": question, "output": "The capital of Zorbia is Quuxville."})
    trainer = LLMTrainer(SMOLLM2)  # LoRA through the engine, bf16 where the CPU has it
    losses = trainer.train(
        data.format_for_training(), num_epochs=12, batch_size=3, learning_rate=1e-3
    )
    assert losses[-1] < losses[0] / 4
    onnx = ONNXConverter(trainer.save_model(tmp_path / "trained_model")).convert_to_onnx(
        tmp_path / "onnx_model"
    )
    reply = ChatInterface(onnx).generate_response("What is the capital of Zorbia?", temperature=0)
    assert "Quuxville" in reply
