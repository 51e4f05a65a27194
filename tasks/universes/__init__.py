"""Universes: index and market listings, and who was a member when (see README.md here)."""
