"""Seed 004, "Example 3: Batch Processing" (run basic_workflow.py first: it writes ./onnx_model)."""

from frontier_signal.local import ChatInterface

chat = ChatInterface("./onnx_model")

questions = ["What is Python?", "What is machine learning?", "What is ONNX?"]

responses = chat.batch_generate(questions, max_new_tokens=50)
for q, a in zip(questions, responses, strict=True):
    print(f"Q: {q}\nA: {a}\n")
