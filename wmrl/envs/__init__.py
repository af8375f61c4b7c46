"""Environments: env cards (YAML) and the wrapped Gymnasium envs built from them."""

from wmrl.envs.card import EnvCard, list_cards, load_card
from wmrl.envs.make import make_env, make_vector_env

__all__ = ["EnvCard", "list_cards", "load_card", "make_env", "make_vector_env"]
