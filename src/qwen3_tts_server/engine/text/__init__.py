"""Text: sentence splitting and the frame budget a text may use."""
