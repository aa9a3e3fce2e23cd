"""Seed 004, "Continuous Learning Pipeline", bounded to two rounds (needs ./onnx_model)."""

from _model import MODEL

from frontier_signal.local import ChatInterface, ConversationDataHandler, LLMTrainer, ONNXConverter

ROUNDS = 2


def continuous_learning_loop():
    """Continuously retrain model with new data"""
    chat = ChatInterface("./onnx_model", log_conversations=True)

    for _ in range(ROUNDS):
        # Use model for inference (logs conversations)
        chat.generate_response("What is Python?")

        # Load new conversations
        data = ConversationDataHandler()
        data.load_from_json(chat.log_file)

        # Retrain model
        trainer = LLMTrainer(model_name=MODEL)
        trainer.train(data.format_for_training(), num_epochs=1)

        # Update model
        onnx_path = ONNXConverter(trainer.save_model()).convert_to_onnx("./onnx_model")
        chat = ChatInterface(onnx_path, log_conversations=True)
    print("rounds:", ROUNDS)


continuous_learning_loop()
