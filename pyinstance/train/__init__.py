"""Training: fine-tuning descriptors on a collection (trainer, data, augmentation, processes)."""
