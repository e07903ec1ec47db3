"""The version of sknets: its one source (the package metadata reads it too)."""

__version__ = "0.1.0"
