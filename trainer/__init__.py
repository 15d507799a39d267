"""Fine-tuning the matching adapter on pseudo-labels from the label store."""
