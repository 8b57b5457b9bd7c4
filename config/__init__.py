"""Typed settings for lkps, parsed once from the environment."""

from config.settings import ConfigError, GraphCredential, Settings

__all__ = ["ConfigError", "GraphCredential", "Settings"]
