"""buildnotify-tray: a desktop tray client of a buildnotify hub.

- :mod:`.model`: the state (builds, claims, connection, notifications), no Qt;
- :mod:`.view`: the tray icon, its menu and balloons (Qt);
- :mod:`.bridge`: the reactor thread and the signal that carries the
  client's callbacks to the GUI thread;
- :mod:`.app`: the ``buildnotify-tray`` command.
"""

__version__ = "0.1.0"
