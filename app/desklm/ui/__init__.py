"""DeskLM's Qt window. Reaches the engine only through workers on their own threads."""
