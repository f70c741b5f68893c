"""Walk a running app's accessibility tree through AT-SPI, as a screen reader does (run by the system python3).

A venv has no ``gi``/``pyatspi``, so the tests run this file with the system
interpreter. Arguments: the application's name, then the accessible names to
"press" (through the Action interface, the way Orca does). It prints one JSON
object: the tree before, the presses made, and the tree after.

With ``--script STEPS_JSON`` as the second argument it runs steps instead, while
listening to the events a screen reader hears, and prints the trees it was told to
walk and every event: ``{"walk": label}``, ``{"press": name}`` (``"hidden": true`` also presses an item not shown), ``{"type": [name, text]}``
(through the EditableText interface; an empty name and ``"role"`` take the first shown box of that role), ``{"wait": substring, "seconds": s}`` (until an
announcement, a text or name change carrying it arrives), ``{"sleep": s}``.
"""

from __future__ import annotations

import json
import sys
import time

import pyatspi

PRESS_ACTIONS = ("press", "click", "activate", "toggle", "switch", "jump", "showmenu", "trigger")


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
        "focusable": state.contains(pyatspi.STATE_FOCUSABLE),
        "description": node.description or "",
        "text": _text(node),
        "actions": actions,
        "path": list(path),
    }
    out.append(entry)
    for index in range(node.childCount):
        walk(node.getChildAtIndex(index), depth + 1, out, path + (index,))
    return out


def _text(node) -> str | None:
    """What the Text interface gives (how Orca reads a label's or a bubble's words), or None."""
    try:
        text = node.queryText()
    except NotImplementedError:
        return None
    try:
        return text.getText(0, -1)
    except Exception:  # noqa: BLE001 (a node going away while walked)
        return None


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
                                "error": error, "at": time.monotonic()})
                time.sleep(0.3)
                break
    return pressed


EVENTS = ("object:announcement", "object:text-changed:insert", "object:property-change:accessible-name",
          "object:property-change:accessible-description", "object:state-changed:focused", "window:activate")


def _pump(seconds: float) -> None:
    from gi.repository import GLib

    context, deadline = GLib.MainContext.default(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not context.iteration(False):
            time.sleep(0.02)


def run_script(app_name: str, steps: list) -> dict:
    """Run ``steps`` against the app while recording the events a screen reader receives."""
    from gi.repository import Atspi

    heard: list[dict] = []

    def on_event(event) -> None:
        try:
            source = event.source.get_name() or ""
            role = event.source.get_role_name()
        except Exception:  # noqa: BLE001 (the source may be gone already)
            source, role = "", ""
        value = event.any_data if isinstance(event.any_data, str) else ""
        heard.append({"type": event.type, "source": source, "role": role, "value": value,
                      "detail1": event.detail1, "at": time.monotonic()})

    listener = Atspi.EventListener.new(on_event)
    for kind in EVENTS:
        listener.register(kind)
    app = find_app(app_name)
    _pump(1.0)
    walks, pressed, started = {}, [], time.monotonic()
    for step in steps:
        if "walk" in step:
            _pump(0.5)
            walks[step["walk"]] = walk(find_app(app_name))
        elif "press" in step:
            tree = walk(find_app(app_name))
            # A menu's items are not showing while it is closed; Orca can still trigger them.
            found = press(app, [e for e in tree if e["showing"] or step.get("hidden")], {step["press"]})[:1]
            pressed.extend(found)
            if not found:
                raise SystemExit(f"nothing named {step['press']!r} to press")
            _pump(0.5)
        elif "type" in step:
            name, words = step["type"]
            tree = walk(find_app(app_name))
            # By its name, or (a dialog's unnamed box) the first shown one of ``role``.
            entry = next((e for e in tree if e["showing"] and (e["name"] == name if name else e["role"] == step["role"])),
                         None)
            if entry is None:
                raise SystemExit(f"no text box named {name!r}")
            node_at(app, entry["path"]).queryEditableText().setTextContents(words)
            _pump(0.3)
        elif "wait" in step:
            deadline = time.monotonic() + step.get("seconds", 60)
            while time.monotonic() < deadline and not any(step["wait"] in e["value"] for e in heard):
                _pump(0.2)
        elif "sleep" in step:
            _pump(step["sleep"])
    for event in heard + pressed:
        event["at"] = round(event["at"] - started, 2)
    return {"walks": walks, "pressed": pressed, "events": heard}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[2] == "--script":
        print(json.dumps(run_script(sys.argv[1], json.loads(sys.argv[3]))))
        return 0
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
