"""buildnotify-tray: a desktop tray client of a buildnotify hub.

- :mod:`.builds`: one branch's builds and its state in words (no Qt);
- :mod:`.model`: the state (builds, claims, alerts, projects, connection,
  notifications), no Qt;
- :mod:`.notifications`: balloons, batched;
- :mod:`.icons`: one colour and one shape per state (Qt);
- :mod:`.menu`: the menu and the user's actions (Qt);
- :mod:`.view`: the tray icon, its tooltip and balloons (Qt);
- :mod:`.client`: the hub side, in the reactor thread: watching, what is
  asked at each (re)connect, the user's actions;
- :mod:`.survey`: which projects one can see, and which the hub refuses;
- :mod:`.bridge`: the reactor thread, and the signal and calls between it
  and the GUI thread;
- :mod:`.app`: the ``buildnotify-tray`` command.
"""

__version__ = "0.1.0"
