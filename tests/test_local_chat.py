"""ChatInterface on onnxruntime: no torch, logs written through, sampling, the interactive loop."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer
from frontier_signal.local.data_handler import DataFileError
from tests.conftest import LOCAL_FACTS, TINY

QUESTION = LOCAL_FACTS[0]["input"]
ANSWER = LOCAL_FACTS[0]["output"]


def test_chat_interface_imports_and_generates_without_torch_or_transformers(local_onnx_model):
    code = (
        "import sys\n"
        "from frontier_signal.local import ChatInterface\n"
        f"chat = ChatInterface({str(local_onnx_model)!r})\n"
        f"print(chat.generate_response({QUESTION!r}, temperature=0))\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.splitlines() == [ANSWER, "heavy: []"]


def test_logs_are_written_through_with_timestamps_and_append_to_an_existing_file(
    local_onnx_model, tmp_path
):
    log_file = tmp_path / "chat_history.json"
    earlier = [{"input": "Old?", "output": "Old.", "timestamp": "2026-02-07T10:30:00"}]
    log_file.write_text(json.dumps(earlier))
    chat = ChatInterface(local_onnx_model, log_conversations=True, log_file=log_file)
    assert chat.log_file == str(log_file)
    reply = chat.generate_response(QUESTION, temperature=0)
    on_disk = json.loads(log_file.read_text())  # written at once, no save call needed
    assert on_disk[0] == earlier[0] and on_disk[1]["input"] == QUESTION
    assert on_disk[1]["output"] == reply
    stamp = on_disk[1]["timestamp"]
    assert len(stamp) == len("2026-02-07T10:30:00+00:00") and stamp[10] == "T"
    chat.batch_generate(["Hi", "Hello"], max_new_tokens=5)
    assert [e["input"] for e in json.loads(log_file.read_text())] == [
        "Old?",
        QUESTION,
        "Hi",
        "Hello",
    ]
    assert [e["input"] for e in chat.get_conversation_log()] == [QUESTION, "Hi", "Hello"]
    chat.save_conversation_log()  # idempotent: does not duplicate entries
    assert len(json.loads(log_file.read_text())) == 4


def test_without_logging_nothing_is_written_until_save_conversation_log(local_onnx_model, tmp_path):
    log_file = tmp_path / "log.json"
    chat = ChatInterface(local_onnx_model, log_file=log_file)
    chat.generate_response("Hi", max_new_tokens=3)
    assert not log_file.exists()
    assert chat.save_conversation_log() == str(log_file)
    assert [e["input"] for e in json.loads(log_file.read_text())] == ["Hi"]
    # Saving to a file that has history appends to it, and saving twice adds nothing twice.
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"input": "Old?", "output": "Old."}]))
    chat.save_conversation_log(other)
    chat.save_conversation_log(other)
    assert [e["input"] for e in json.loads(other.read_text())] == ["Old?", "Hi"]


def test_a_corrupt_log_file_gives_a_clear_error(local_onnx_model, tmp_path):
    (tmp_path / "log.json").write_text("{not json")
    with pytest.raises(DataFileError, match=r"log\.json is not valid JSON"):
        ChatInterface(local_onnx_model, log_conversations=True, log_file=tmp_path / "log.json")


def test_conversation_logs_load_back_and_retrain(local_onnx_model, local_trained_model, tmp_path):
    log_file = tmp_path / "my_chats.json"
    chat = ChatInterface(local_onnx_model, log_conversations=True, log_file=log_file)
    chat.batch_generate([f["input"] for f in LOCAL_FACTS], temperature=0)
    data = ConversationDataHandler()
    assert data.load_from_json(log_file) == 2
    assert data.conversations == LOCAL_FACTS
    trainer = LLMTrainer(str(local_trained_model), method="lora", dtype="float32")
    losses = trainer.train(data.format_for_training(), num_epochs=1, batch_size=2)
    assert len(losses) == 1 and losses[0] < 3


def test_sampling_is_reproducible_with_a_seed_and_temperature_zero_is_greedy(local_onnx_model):
    chat = ChatInterface(local_onnx_model)
    first = chat.generate_response("Tell me a story", temperature=1.5, top_p=1.0, seed=7)
    assert chat.generate_response("Tell me a story", temperature=1.5, top_p=1.0, seed=7) == first
    others = {chat.generate_response("Tell me a story", temperature=1.5, seed=s) for s in range(4)}
    assert len(others) > 1
    assert chat.generate_response(QUESTION, temperature=0) == ANSWER
    with pytest.raises(ValueError, match="temperature"):
        chat.generate_response("Hi", temperature=-1)


def test_max_length_bounds_prompt_plus_reply_and_a_too_long_prompt_is_an_error(local_onnx_model):
    chat = ChatInterface(local_onnx_model, max_length=40)
    prompt = chat.model.encode(chat.model.render_chat([{"role": "user", "content": "Hi"}]))
    seen = []
    original = chat.model.generate
    chat.model.generate = lambda p, s, seeds: seen.append((p, s)) or original(p, s, seeds)
    chat.generate_response("Hi", max_new_tokens=100, temperature=0, repetition_penalty=1.0)
    assert seen[0][1].max_new_tokens == 40 - len(prompt)
    with pytest.raises(ValueError, match="leaves no room for a reply"):
        chat.generate_response("word " * 50)


def test_interactive_chat_keeps_history_logs_turns_and_ends_on_quit(local_onnx_model, tmp_path):
    chat = ChatInterface(local_onnx_model, log_conversations=True, log_file=tmp_path / "l.json")
    prompts = []
    original = chat.model.stream
    chat.model.stream = lambda p, s, seed: prompts.append(p) or original(p, s, seed)
    lines = iter([QUESTION, "", "And again?", "quit", "never read"])
    printed, written = [], []
    chat.chat(
        temperature=0,
        input_fn=lambda _: next(lines),
        output_fn=printed.append,
        write_fn=written.append,
    )
    assert "".join(written).startswith(f"Assistant: {ANSWER}\n") and printed[-1] == "Goodbye."
    assert len(written) > 3  # "Assistant: " + first piece, more pieces, newline: streamed
    second = chat.model.decode(prompts[1])
    assert QUESTION in second and ANSWER in second and "And again?" in second
    assert [e["input"] for e in chat.get_conversation_log()] == [QUESTION, "And again?"]


@pytest.mark.parametrize("ending", ["exit\n", ""])
def test_the_chat_command_reads_stdin_and_ends_on_exit_or_end_of_input(local_onnx_model, ending):
    command = [sys.executable, "-m", "frontier_signal.cli", "local", "chat"]
    command += ["--model-path", str(local_onnx_model), "--temperature", "0"]
    result = subprocess.run(
        command, input=f"{QUESTION}\n{ending}", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"Assistant: {ANSWER}" in result.stdout
    assert result.stdout.rstrip().endswith("Goodbye.")


def test_the_chat_command_on_a_pty_ends_cleanly_on_ctrl_c(local_onnx_model):
    main, child = pty.openpty()
    command = [sys.executable, "-m", "frontier_signal.cli", "local", "chat"]
    process = subprocess.Popen(
        [*command, "--model-path", str(local_onnx_model), "--temperature", "0"],
        stdin=child,
        stdout=child,
        stderr=child,
        # As at a terminal: a runner that started us in the background may have ignored SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # The test keeps its own copy of the terminal's child end open until the end: once every
    # copy is closed Linux may drop output the child wrote just before exiting.
    output = b""

    def read_until(marker: bytes, count: int = 1, timeout: float = 60) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while output.count(marker) < count and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                output += os.read(main, 4096)
        assert output.count(marker) >= count, output

    try:
        read_until(b"You: ")
        os.write(main, f"{QUESTION}\r".encode())
        read_until(b"You: ", count=2)  # answered, waiting for the next line
        # A signal that lands between the prompt being written and input() blocking on the
        # terminal is only seen after the next line (as at any Python prompt): a person's
        # Ctrl-C comes later than that, and so does ours.
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        read_until(b"Goodbye.")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
        os.close(child)
    assert ANSWER.encode() in output and b"Traceback" not in output


def test_a_missing_onnx_folder_fails_at_construction_and_only_cpu_is_supported(
    local_onnx_model, tmp_path
):
    with pytest.raises(FileNotFoundError, match="export a model"):
        ChatInterface(tmp_path / "onnx_model")
    with pytest.raises(ValueError, match="cuda"):
        ChatInterface(local_onnx_model, device="cuda")


def test_the_tiny_model_name_is_not_an_onnx_folder():
    with pytest.raises(FileNotFoundError):
        ChatInterface(TINY)


# ----- streams -----------------------------------------------------------------------------------
def test_the_stream_joins_to_the_greedy_reply_and_is_logged_once_exhausted(local_onnx_model):
    chat = ChatInterface(local_onnx_model)
    for prompt in (QUESTION, LOCAL_FACTS[1]["input"], "Tell me something else entirely"):
        expected = chat.generate_response(prompt, max_new_tokens=30, temperature=0)
        pieces = list(chat.generate_response_stream(prompt, max_new_tokens=30, temperature=0))
        assert "".join(pieces) == expected and all(pieces)
    assert len(list(chat.generate_response_stream(QUESTION, temperature=0))) > 1
    sampled = chat.generate_response("Hi", temperature=1.2, top_p=1.0, seed=3)
    assert "".join(chat.generate_response_stream("Hi", temperature=1.2, top_p=1.0, seed=3)) == (
        sampled
    )
    assert chat.get_conversation_log()[-1] == {**chat.get_conversation_log()[-1], "output": sampled}
    with pytest.raises(ValueError, match="top_p"):
        next(chat.generate_response_stream("Hi", top_p=0))


def test_the_first_piece_arrives_before_generation_ends(local_onnx_model):
    """Counted in model calls, not time: at the first piece only prefill and the first decode
    steps have run; the rest run while the caller holds the stream."""
    chat = ChatInterface(local_onnx_model)
    calls = []
    original = chat.model._run
    chat.model._run = lambda *args: calls.append(1) or original(*args)
    stream = chat.generate_response_stream(QUESTION, temperature=0)
    first = next(stream)
    at_first = len(calls)
    rest = list(stream)
    assert first and rest and at_first < len(calls)
    assert "".join([first, *rest]) == ANSWER


def test_a_piece_never_splits_a_multi_byte_character(local_onnx_model):
    from frontier_signal.local.onnx_runtime import OnnxCausalLM, TextStream

    model = OnnxCausalLM(local_onnx_model)
    text = "  Grüße, 世界! 🌍🚀 naïve café \n"
    tokens = model.encode(text)
    assert len(tokens) > len(text.split())  # byte-level BPE: some characters span tokens
    stream = TextStream(model.decode)
    pieces = [stream.push(token) for token in tokens] + [stream.finish()]
    assert "".join(pieces) == model.decode(tokens).strip() == text.strip()
    assert not any("\ufffd" in piece for piece in pieces)
    assert sum(1 for piece in pieces if piece) > 5
