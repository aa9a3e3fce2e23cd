"""Seed 004, "Example 4: Using Logged Conversations for Retraining" (needs ./onnx_model)."""

from _model import MODEL

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer

# Enable logging during chat
chat = ChatInterface("./onnx_model", log_conversations=True, log_file="my_chats.json")

# Chat naturally - logging happens in the background
response = chat.generate_response("Hello!")

# Later, use logged conversations for retraining
data = ConversationDataHandler()
data.load_from_json("my_chats.json")

trainer = LLMTrainer(model_name=MODEL)
print(trainer.train(data.format_for_training(), num_epochs=3))
