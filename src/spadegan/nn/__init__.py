"""Neural network modules: SPADE normalization, generators, discriminator, encoder, VGG19."""
