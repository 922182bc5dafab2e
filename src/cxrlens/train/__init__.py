"""Training: losses, checkpoints and the Fabric training loop."""
