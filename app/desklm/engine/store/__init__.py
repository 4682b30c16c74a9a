"""On disk: conversations and app settings (versioned JSON, atomic, validated), the full-text
search index and saved server connections."""
