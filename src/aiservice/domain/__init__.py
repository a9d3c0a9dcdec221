"""Pure business concepts: no I/O, no frameworks."""
