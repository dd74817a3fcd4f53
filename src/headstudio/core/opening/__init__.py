"""SOURCE -> Document: specs, checkpoint files and folders, what they would run, attaching their weights."""
