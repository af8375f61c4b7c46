"""Training loops and the checkpoints that let a killed run resume exactly where it stopped."""
