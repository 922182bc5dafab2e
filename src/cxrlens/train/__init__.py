"""Training: the Fabric trainer, objectives and losses, run folders, and the supervised and SEAM recipes."""
