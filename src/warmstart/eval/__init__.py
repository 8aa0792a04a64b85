"""Offline evaluation: cold-item, cold-user and warm splits, metrics, the runner and its report."""
