"""Seed 004, "Example 1: Customer Support Bot"."""

from pathlib import Path

from _model import MODEL

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer, ONNXConverter

HERE = Path(__file__).parent

# Prepare customer support conversations
data = ConversationDataHandler()
data.load_from_json(HERE / "support_conversations.json")

# Train on support data
trainer = LLMTrainer(model_name=MODEL)
trainer.train(data.format_for_training(), num_epochs=5)

# Deploy as ONNX
converter = ONNXConverter(trainer.save_model())
onnx_path = converter.convert_to_onnx("./support_bot")

# Use in production
chat = ChatInterface(onnx_path)
response = chat.generate_response("How do I reset my password?")
print(response)
