"""Training loops (accelerate), one per trainable model, on one run frame (folder, checkpoints, resume, EMA) and one
in-memory tile reader; each publishes a diffusers folder that ``from_pretrained`` loads."""
