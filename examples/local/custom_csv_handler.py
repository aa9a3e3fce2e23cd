"""Seed 004, "Extending the System: Adding Custom Data Sources"."""

import csv
from pathlib import Path

from frontier_signal.local import ConversationDataHandler

HERE = Path(__file__).parent


class CustomDataHandler(ConversationDataHandler):
    def load_from_csv(self, file_path):
        """Load conversations from CSV file"""
        with open(file_path) as f:
            reader = csv.DictReader(f)
            for row in reader:
                self.add_conversation({"input": row["question"], "output": row["answer"]})


handler = CustomDataHandler()
handler.load_from_csv(HERE / "support.csv")
print(len(handler.format_for_training()), "conversations")
