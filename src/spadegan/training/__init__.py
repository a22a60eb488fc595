"""Training: the generator and discriminator steps, and the training loop."""
