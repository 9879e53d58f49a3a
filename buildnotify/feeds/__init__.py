"""Read-only feeds of the hub's state for tools that poll over HTTP
(:mod:`.cctray`: ``GET /cctray.xml`` for CCMenu, Nevergreen, BuildNotify)."""
