"""Robustness evaluation: metrics, instruction-variant evaluation sets, reports, a training callback,
and the shipped shapes benchmark."""
