"""Seed 004, "Example 5: Custom Training Parameters" (needs ./onnx_model)."""

from _model import MODEL

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer

data = ConversationDataHandler()
data.add_conversation({"input": "What is ONNX?", "output": "An open format for models."})
train_texts = data.format_for_training()

trainer = LLMTrainer(model_name=MODEL, device="cpu")

# Fine-tune with custom parameters
trainer.train(train_texts=train_texts, num_epochs=5, batch_size=2, learning_rate=3e-5)

# Adjust generation parameters
chat = ChatInterface("./onnx_model")
response = chat.generate_response(
    "Your question",
    max_new_tokens=100,
    temperature=0.8,  # Higher = more creative
    top_p=0.95,
)
print(response)
