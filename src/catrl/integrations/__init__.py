"""Adapters that put catrl's rewards inside other RL stacks; each is a thin layer over catrl.rewards."""
