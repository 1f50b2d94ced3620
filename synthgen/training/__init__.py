"""Training loops (accelerate), one per trainable model."""
