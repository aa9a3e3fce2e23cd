"""ConversationDataHandler: files in and out, validation that names the record and field."""

from __future__ import annotations

import json

import pytest

from frontier_signal.local.data_handler import (
    ConversationDataHandler,
    DataFileError,
    EmptyDatasetError,
    InvalidRecordError,
)

RECORDS = [
    {"input": "What is Python?", "output": "A programming language."},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is ONNX?"},
            {"role": "assistant", "content": "A model format."},
        ]
    },
]


def test_json_round_trip_keeps_records_and_drops_extra_keys_such_as_timestamps(tmp_path):
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{**RECORDS[0], "timestamp": "2026-02-07T10:30:00"}, RECORDS[1]]))
    handler = ConversationDataHandler()
    assert handler.load_from_json(path) == 2
    assert handler.conversations == RECORDS
    handler.save_to_json(tmp_path / "out.json")
    again = ConversationDataHandler()
    again.load_from_json(tmp_path / "out.json")
    assert again.conversations == RECORDS


def test_jsonl_round_trip_and_a_second_load_appends(tmp_path):
    handler = ConversationDataHandler()
    for record in RECORDS:
        handler.add_conversation(record)
    handler.save_to_jsonl(tmp_path / "data.jsonl")
    assert len((tmp_path / "data.jsonl").read_text().splitlines()) == 2
    again = ConversationDataHandler()
    again.load_from_jsonl(tmp_path / "data.jsonl")
    again.load_from_jsonl(tmp_path / "data.jsonl")
    assert again.conversations == RECORDS + RECORDS


@pytest.mark.parametrize("columns", [("question", "answer"), ("input", "output")])
def test_csv_loads_question_answer_or_input_output_columns(tmp_path, columns):
    path = tmp_path / "data.csv"
    path.write_text(f'{columns[0]},{columns[1]}\nHi?,"Hello, there."\n')
    handler = ConversationDataHandler()
    assert handler.load_from_csv(path) == 1
    assert handler.conversations == [{"input": "Hi?", "output": "Hello, there."}]


def test_csv_without_the_expected_columns_says_which_columns_it_has(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("q,a\nHi?,Hello\n")
    with pytest.raises(DataFileError, match=r"question,answer or input,output.*\['q', 'a'\]"):
        ConversationDataHandler().load_from_csv(path)


def test_a_subclass_overriding_load_from_csv_with_add_conversation_keeps_working(tmp_path):
    import csv

    class CustomDataHandler(ConversationDataHandler):  # the seed's extension example
        def load_from_csv(self, file_path):
            with open(file_path) as f:
                for row in csv.DictReader(f):
                    self.add_conversation({"input": row["question"], "output": row["answer"]})

    path = tmp_path / "data.csv"
    path.write_text("question,answer\nHi?,Hello\n")
    handler = CustomDataHandler()
    handler.load_from_csv(path)
    assert handler.get_batch() == [{"input": "Hi?", "output": "Hello"}]
    assert len(handler.format_for_training()) == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"input": "Hi"}, "'output'"),
        ({"input": "", "output": "x"}, "'input'"),
        ({"input": "Hi", "output": 3}, "'output'"),
        ({"messages": []}, "'messages'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, r"'messages\[0\].role'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "no assistant turn"),
        ("just text", "expected an object"),
    ],
)
def test_add_conversation_rejects_a_bad_record_naming_the_field(record, field):
    handler = ConversationDataHandler()
    handler.add_conversation(RECORDS[0])
    with pytest.raises(InvalidRecordError, match=f"record 1: .*{field}"):
        handler.add_conversation(record)
    assert len(handler) == 1


def test_a_bad_record_in_a_file_names_the_file_index_and_field_and_adds_nothing(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([RECORDS[0], RECORDS[0], {"input": "Hi", "answer": "x"}]))
    handler = ConversationDataHandler()
    with pytest.raises(InvalidRecordError, match=r"record 2 of .*data\.json: field 'output'"):
        handler.load_from_json(path)
    assert len(handler) == 0


def test_a_corrupt_data_file_gives_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"input": "Hi", "output": ')
    with pytest.raises(DataFileError, match=r"broken\.json is not valid JSON"):
        ConversationDataHandler().load_from_json(path)
    (tmp_path / "not_array.json").write_text('{"input": "Hi", "output": "x"}')
    with pytest.raises(DataFileError, match="expected a JSON array"):
        ConversationDataHandler().load_from_json(tmp_path / "not_array.json")
    lines = tmp_path / "broken.jsonl"
    lines.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(DataFileError, match=r"broken\.jsonl, line 2 is not valid JSON"):
        ConversationDataHandler().load_from_jsonl(lines)
    assert issubclass(DataFileError, ValueError)


def test_a_missing_data_file_raises_file_not_found(tmp_path):
    handler = ConversationDataHandler()
    for load in (handler.load_from_json, handler.load_from_jsonl, handler.load_from_csv):
        with pytest.raises(FileNotFoundError, match="no data file"):
            load(tmp_path / "nope")


def test_formatting_an_empty_dataset_raises_a_clear_error():
    with pytest.raises(EmptyDatasetError, match="no conversations"):
        ConversationDataHandler().format_for_training()


def test_format_for_training_renders_the_chat_template_with_its_default_system_prompt(tokenizer):
    handler = ConversationDataHandler(tokenizer)
    for record in RECORDS:
        handler.add_conversation(record)
    texts = handler.format_for_training()
    assert all(isinstance(text, str) for text in texts)
    expected = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "What is Python?"},
            {"role": "assistant", "content": "A programming language."},
        ],
        tokenize=False,
    )
    assert texts[0] == expected
    assert texts[0].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in texts[1]


def test_get_batch_returns_a_slice_and_rejects_bad_bounds():
    handler = ConversationDataHandler()
    for index in range(5):
        handler.add_conversation({"input": f"q{index}", "output": f"a{index}"})
    assert [r["input"] for r in handler.get_batch(3, 10)] == ["q3", "q4"]
    assert len(handler.get_batch()) == 5
    with pytest.raises(ValueError, match="batch_size"):
        handler.get_batch(0, 0)
