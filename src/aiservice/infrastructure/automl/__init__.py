"""AutoML (ADR 28): the study store and the Optuna search engine."""
