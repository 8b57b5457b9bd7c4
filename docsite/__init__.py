"""The documentation site's build-time pieces: pages generated from the code (settings, API reference)."""
