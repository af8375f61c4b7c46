"""Diagnostics for trained world models: probes and collapse checks on frozen features."""
