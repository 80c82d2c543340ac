"""Test helpers: a loopback Hugging Face Hub backed by real git repositories."""

from .hub import LocalHub, RequestRecord

__all__ = ["LocalHub", "RequestRecord"]
