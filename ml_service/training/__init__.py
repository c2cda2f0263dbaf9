"""Training: synthetic data with exact ground truth, the training loop and its metrics."""
