"""Collecting rollouts, storing them as Minari datasets, and reading them back as clips."""
