"""ctac: a compiler and accelerator simulator for Compressed Token Attention (CTA)."""

from ctac.errors import CtacError

__all__ = ["CtacError"]
__version__ = "0.1.0"
