"""Walk a running app's accessibility tree through AT-SPI, as a screen reader does (run by the system python3).

A venv has no ``gi``/``pyatspi``, so the tests run this file with the system
interpreter. Arguments: the application's name, then the accessible names to
"press" (through the Action interface, the way Orca does). It prints one JSON
object: the tree before, the presses made, and the tree after.
"""

from __future__ import annotations

import json
import sys
import time

import pyatspi

PRESS_ACTIONS = ("press", "click", "activate", "toggle", "switch", "jump", "showmenu")


def find_app(name: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desktop = pyatspi.Registry.getDesktop(0)
        for index in range(desktop.childCount):
            app = desktop.getChildAtIndex(index)
            if app is not None and app.name == name and app.childCount:
                return app
        time.sleep(0.5)
    raise SystemExit(f"no application named {name!r} on the AT-SPI bus")


def walk(node, depth: int = 0, out=None, path=()):
    out = [] if out is None else out
    if node is None or depth > 60:
        return out
    state = node.getState()
    try:
        action = node.queryAction()
        actions = [action.getName(i) for i in range(action.nActions)]
    except NotImplementedError:
        actions = []
    entry = {
        "role": node.getRoleName(),
        "name": node.name or "",
        "showing": state.contains(pyatspi.STATE_SHOWING),
        "visible": state.contains(pyatspi.STATE_VISIBLE),
        "enabled": state.contains(pyatspi.STATE_ENABLED) and state.contains(pyatspi.STATE_SENSITIVE),
        "checked": state.contains(pyatspi.STATE_CHECKED),
        "actions": actions,
        "path": list(path),
    }
    out.append(entry)
    for index in range(node.childCount):
        walk(node.getChildAtIndex(index), depth + 1, out, path + (index,))
    return out


def node_at(app, path):
    node = app
    for index in path:
        node = node.getChildAtIndex(index)
    return node


def press(app, tree, names):
    pressed = []
    for entry in tree:
        if entry["name"] not in names:
            continue
        node = node_at(app, entry["path"])
        try:
            action = node.queryAction()
        except NotImplementedError:
            continue
        for i in range(action.nActions):
            if action.getName(i).lower() in PRESS_ACTIONS:
                try:
                    ok, error = bool(action.doAction(i)), ""
                except Exception as exc:  # e.g. no reply: the app sits in a modal dialog the press opened
                    ok, error = False, str(exc)
                pressed.append({"name": entry["name"], "role": entry["role"], "action": action.getName(i), "ok": ok,
                                "error": error})
                time.sleep(0.3)
                break
    return pressed


def main() -> int:
    app_name, names = sys.argv[1], set(sys.argv[2:])
    app = find_app(app_name)
    time.sleep(1.0)  # let the window finish its first layout
    before = walk(app)
    pressed = press(app, before, names)
    time.sleep(1.0)
    after = walk(find_app(app_name))
    print(json.dumps({"before": before, "pressed": pressed, "after": after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
