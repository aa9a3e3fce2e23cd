"""Seed 004, "Example 2: Domain-Specific Assistant"."""

from pathlib import Path

from _model import MODEL

from frontier_signal.local import ConversationDataHandler, LLMTrainer

HERE = Path(__file__).parent

# Train on domain-specific data (e.g., medical, legal, technical)
data = ConversationDataHandler()
data.load_from_json(HERE / "domain_data.json")

trainer = LLMTrainer(model_name=MODEL)
trainer.train(
    data.format_for_training(),
    num_epochs=10,  # More epochs for domain expertise
    batch_size=4,
)

model_path = trainer.save_model("./domain_model")
print(model_path)
