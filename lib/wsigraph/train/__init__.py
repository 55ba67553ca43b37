"""Cross-validation, training loop, metrics, executors."""
