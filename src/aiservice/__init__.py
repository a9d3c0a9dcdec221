"""aiservice: ML model management and serving platform."""

__version__ = "0.1.0"
