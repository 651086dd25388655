"""Evaluators: metrics, feature extractors, teacher references, noise sets and cost measures."""
