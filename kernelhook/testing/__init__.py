"""Test helpers: a loopback Hugging Face Hub backed by real git repositories."""

from .localhub import Fault, LocalHub, RequestRecord

__all__ = ["Fault", "LocalHub", "RequestRecord"]
