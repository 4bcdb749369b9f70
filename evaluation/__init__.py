"""Evaluation against answer keys (the simulator's truth, benchmark sets): never imported by the platform."""
