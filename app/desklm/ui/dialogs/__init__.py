"""The dialogs of the main window: models, server connections, About."""
