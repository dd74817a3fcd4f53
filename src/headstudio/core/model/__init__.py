"""The open model and what is derived from it: the Document, traced shapes, heads, the tree, statistics."""
