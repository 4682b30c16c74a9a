"""The side panels of the main window: gauges, settings, chats, search, the API server."""
