"""Conditioner networks."""
