"""The surgery core: opening, tracing, head detection, edits and saving. Never imports Qt."""
