"""Fidelity metrics for synthetic data (see ``fidelity.fidelity_metrics``)."""
