"""Seed 001, "Best Practices / 4. Monitor Training Metrics" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
dataloader = [  # edit: a small list of batches
    [{"text": "The quick brown fox jumps over the lazy dog."}],
    [{"text": "Machine learning is transforming technology."}],
    [{"text": "The capital of Zorbia is Quellmar."}, {"text": "Zorbia is a small country."}],
]
num_epochs = 2

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run_id = client.create_run(base_model=MODEL).run_id
training = client.training(run_id)

for epoch in range(num_epochs):  # noqa: B007 (as in the seed)
    training.train_epoch(dataloader, progress=True)
    metrics = training.get_metrics()

    # Log to wandb, tensorboard, etc. (edit: wandb.log -> print)
    print(
        {
            "avg_loss": metrics["avg_loss"],
            "step": metrics["current_step"],
        }
    )
