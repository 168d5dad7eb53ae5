"""NumPy backend: one standalone ``.py`` module that needs only NumPy."""
