"""Integrations with other libraries, each imported only when it is used: kernelhook's own modules never import
them (``kernelhook.transformers`` re-exports transformers.py, and imports it only when itself imported)."""
