"""Integrations with other libraries, each imported only when it is used (none is imported by kernelhook)."""
