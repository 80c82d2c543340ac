"""Test helpers: a loopback Hugging Face Hub backed by real git repositories."""

from .localhub import Fault, LocalHub, Redirect, RequestRecord

__all__ = ["Fault", "LocalHub", "Redirect", "RequestRecord"]
