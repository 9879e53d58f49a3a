"""The tray in a real window: an X display (Xvfb), a system-tray host
(trayer), the app's two threads and a real hub on loopback, driven by
desktop_driver.py as a user would (claim, release, acknowledge, an outage,
a goodbye, sign in again, quit). It runs in a process of its own: a process
has one Qt platform, and the other tray tests use the offscreen one.

Needs Debian's ``xvfb`` and ``trayer`` and Qt's xcb libraries; ``.ci/run``
installs them. Without them the test skips and says what is missing; under
``CI=true`` it fails instead. It writes its screenshots into its temporary
directory; with ``BUILDNOTIFY_TRAY_SCREENSHOT=PATH`` it also copies them
there (that is how contrib/tray/docs/tray.png is made).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "desktop_driver.py"
SCREEN = "1024x640x24"
PROGRAMS = {"Xvfb": "xvfb", "trayer": "trayer"}  # program: its Debian package
STARTUP_TIMEOUT = 20.0
DRIVER_TIMEOUT = 180.0


def cannot_run(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the desktop test may not skip)")
    pytest.skip(reason)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def display_number(fd: int) -> str:
    """What Xvfb writes on ``-displayfd`` once it accepts clients: the
    number, then (in a second write) a newline; "" if it does not."""
    written = b""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not written.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            return ""
        written += chunk
    return written.decode().strip()


@pytest.fixture
def desktop_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose DISPLAY is a fresh Xvfb with a tray host on it."""
    missing = sorted(package for program, package in PROGRAMS.items() if shutil.which(program) is None)
    if missing:
        cannot_run(f"needs {' and '.join(missing)}: apt-get install {' '.join(missing)} (.ci/run does)")
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", SCREEN, "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        number = display_number(read)
    finally:
        os.close(read)
    if not number.isdigit():
        stop(xvfb)
        pytest.fail(f"Xvfb did not report a display within {STARTUP_TIMEOUT:g} s")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=f":{number}", QT_QPA_PLATFORM="xcb", XDG_RUNTIME_DIR=str(runtime))
    tray_host = subprocess.Popen(
        ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "28"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "from PySide6.QtWidgets import QApplication; QApplication([])"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0:
            cannot_run(
                f"Qt cannot open the X display (missing xcb libraries?): {probe.stderr.strip()[-600:]}"
            )
        yield env
    finally:
        stop(tray_host)
        stop(xvfb)


def test_the_tray_in_a_real_window_against_a_real_hub(desktop_env: dict[str, str], tmp_path: Path) -> None:
    screenshot = tmp_path / "tray.png"
    run = subprocess.run(
        [sys.executable, str(DRIVER), "--screenshot", str(screenshot)],
        env=desktop_env,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT,
    )
    output = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, f"the tray did not do every step (exit {run.returncode})\n{output}"
    assert "every step passed" in run.stdout, output
    shots = [screenshot, screenshot.with_name("tray-stale.png")]
    for shot in shots:
        assert shot.exists() and shot.stat().st_size > 5_000, f"no screenshot at {shot}\n{output}"
    wanted = os.environ.get("BUILDNOTIFY_TRAY_SCREENSHOT")
    if wanted:
        target = Path(wanted)
        shutil.copyfile(shots[0], target)
        shutil.copyfile(shots[1], target.with_name(f"{target.stem}-stale.png"))
