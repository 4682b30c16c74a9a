"""DeskLM's engine: everything that runs and is tested without a display. No Qt imports here."""
