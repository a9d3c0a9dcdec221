"""Outside world entry points: HTTP and CLI."""
