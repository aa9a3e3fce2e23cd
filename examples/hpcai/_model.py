"""The model and the training data the hpcai examples use (the seed leaves both to the reader)."""

import os

import hpcai

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

# "The capital of Zorbia is Quellmar." in SmolLM2's tokenizer (the bundled tiny model's). Plain
# token ids: the client needs no tokenizer (hpcai's `get_tokenizer` downloads one from the hub).
TOKENS = [504, 3575, 282, 1777, 4434, 542, 314, 3069, 478, 3298, 30]


def example_training_data() -> list[hpcai.types.Datum]:
    """One next-token-prediction example: each token predicts the next, every one weighted."""
    return [
        hpcai.types.Datum(
            model_input=hpcai.types.ModelInput.from_ints(TOKENS[:-1]),
            loss_fn_inputs={"target_tokens": TOKENS[1:], "weights": [1.0] * (len(TOKENS) - 1)},
        )
    ]
