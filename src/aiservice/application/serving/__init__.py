"""Serving machinery: the model cache, the adaptive batcher."""
