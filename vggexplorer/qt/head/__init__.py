"""The head editor: the Qt model over the head, its view, the palette, properties and undo."""
