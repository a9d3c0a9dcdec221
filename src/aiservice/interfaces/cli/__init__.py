"""The aiservice command line."""
