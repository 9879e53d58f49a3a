"""Headless Qt for every tray test, and the package importable without
installing it. Run from the main repository so ``tests.support`` imports:

    cd /work/main && pytest contrib/tray/tests
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
TRAY = Path(__file__).resolve().parent.parent
if str(TRAY) not in sys.path:
    sys.path.insert(0, str(TRAY))
REPO = TRAY.parent.parent  # for tests.support (the main repository's test helpers)
if (REPO / "tests" / "support.py").exists() and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from PySide6.QtWidgets import QApplication  # noqa: E402

APP = QApplication.instance() or QApplication([])
