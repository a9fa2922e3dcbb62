"""Module passes, one per file; each docstring names the dialect that comes in and goes out."""
