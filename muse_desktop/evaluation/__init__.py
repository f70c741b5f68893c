"""Evaluation: blind comparisons of models and the preferences people record."""
