"""Seed 004, "Programmatic Usage: Basic Workflow": data → train → ONNX → chat."""

from _model import MODEL

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer, ONNXConverter

# 1. Prepare data
data_handler = ConversationDataHandler()
data_handler.add_conversation(
    {"input": "What is Python?", "output": "Python is a programming language."}
)

# 2. Train model
trainer = LLMTrainer(model_name=MODEL, device="cpu")
train_texts = data_handler.format_for_training()
trainer.train(train_texts, num_epochs=3, batch_size=4)
model_path = trainer.save_model()

# 3. Convert to ONNX
converter = ONNXConverter(model_path)
onnx_path = converter.convert_to_onnx("./onnx_model")

# 4. Use for chat
chat = ChatInterface(onnx_path, device="cpu")
response = chat.generate_response("Hello!")
print(response)
