"""Networks only (diffusers ModelMixin + ConfigMixin): the layout autoencoder, the height prior, SPADE, the SD and
SD3 components built from typed sizes, the tiny tokenizer, and the one scheduler table."""
