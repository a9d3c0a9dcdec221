"""Webhook adapters: the HTTP sender and the host resolver."""
