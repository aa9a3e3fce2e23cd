"""Seed 004, "Error Handling"."""

from frontier_signal.local import ChatInterface

try:
    chat = ChatInterface("./onnx_model")
    response = chat.generate_response("Your prompt")
    print(response)
except FileNotFoundError:
    print("Model not found. Please train and convert a model first.")
except Exception as e:
    print(f"Error during inference: {e}")
