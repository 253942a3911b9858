"""Helpers shared by the test suite (model factories, the stand-in Hub ...)."""
