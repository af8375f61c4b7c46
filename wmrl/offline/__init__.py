"""Offline data sources trained with the same models and trainers: the 1X challenge tokens (onex)."""
