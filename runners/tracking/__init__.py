"""Experiment tracking: the hooks the engine calls, their failure guard, and W&B."""
