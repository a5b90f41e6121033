"""Training: the LightningModule, datasets and samplers, and the run orchestration."""
