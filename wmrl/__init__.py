"""wmrl: V-JEPA world models and latent planning agents for Gymnasium environments."""

__version__ = "0.1.0"
