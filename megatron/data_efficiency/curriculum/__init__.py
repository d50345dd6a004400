"""Curriculum learning: difficulty metrics, the offline analyzer, the pacing scheduler and the curriculum sampler."""
