"""The live server of the integration tests is the package's embedded server."""

from frontier_signal.server.embedded import EmbeddedServer as LiveServer

__all__ = ["LiveServer"]
