"""Hearth: an offline desktop chat app for quantized (GGUF) language models."""

__version__ = "0.1.0"
APP_NAME = "Hearth"
