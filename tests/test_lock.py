"""The caregiver PIN (salted scrypt, slowed-down guesses) and what locking and simple mode close."""

from __future__ import annotations

import json

import pytest

from muse_desktop.household import lock
from muse_desktop.household.settings import Settings, load_settings, save_settings, settings_path


def test_the_pin_is_stored_only_as_a_salted_hash():
    settings = Settings()
    lock.set_pin(settings, "2468")
    other = Settings()
    lock.set_pin(other, "2468")
    assert "2468" not in settings.caregiver_pin and settings.caregiver_pin.startswith("scrypt$")
    assert settings.caregiver_pin != other.caregiver_pin  # a fresh salt each time
    assert lock.try_pin(settings, "2468").ok and not lock.try_pin(settings, "2469").ok
    with pytest.raises(lock.PinError):
        lock.set_pin(settings, "12a4")
    with pytest.raises(lock.PinError):
        lock.set_pin(settings, "123")


def test_wrong_pins_are_slowed_down_even_across_restarts():
    settings = Settings()
    lock.set_pin(settings, "2468")
    now = 1000.0
    assert "2 more tries" in lock.try_pin(settings, "0000", now).message
    assert "1 more try" in lock.try_pin(settings, "0000", now).message
    third = lock.try_pin(settings, "0000", now)
    assert not third.ok and third.wait_s == lock.FIRST_WAIT_S
    # During the wait even the right PIN is refused, and it says how long to wait.
    early = lock.try_pin(settings, "2468", now + 10)
    assert not early.ok and early.wait_s == 20 and "wait 20 seconds" in early.message
    save_settings(settings)
    reloaded = load_settings().settings  # the count and the wait are kept
    fourth = lock.try_pin(reloaded, "1111", now + 31)
    assert fourth.wait_s == 2 * lock.FIRST_WAIT_S
    assert lock.try_pin(reloaded, "2468", now + 31 + 2 * lock.FIRST_WAIT_S).ok
    assert reloaded.pin_failures == 0


def test_locking_closes_model_user_type_and_trainer_until_the_pin(qtbot, monkeypatch):
    from muse_desktop.ui.app import MainWindow

    win = MainWindow(Settings(user_type_id="older-adult"))
    qtbot.addWidget(win)
    win.show()
    win.chat.set_user_type(win.page.current())
    win.pages.setCurrentWidget(win.chat)
    trainer_tab = win.tabs.indexOf(win._trainer_scroll)
    assert not win.lock_action.isEnabled()  # nothing to lock with yet
    assert win.set_pin("13579") is None
    win.lock_action.trigger()
    assert not win.chat.change.isVisible() and not win.chat.change_model.isVisible()
    assert not win.tabs.isTabVisible(trainer_tab)
    assert not win.set_pin_action.isEnabled() and not win.simple_action.isEnabled()
    win.show_model_page()
    assert win.pages.currentWidget() is win.chat  # the model step stays closed
    # The lock lives in its own file (both copies), never in settings.json; the PIN in neither.
    for path in lock.lock_paths():
        saved = json.loads(path.read_text())
        assert saved["locked"] is True and "13579" not in path.read_text()
    assert "13579" not in settings_path().read_text() and "caregiver_pin" not in settings_path().read_text()

    reopened = MainWindow(load_settings().settings)  # still locked after a restart
    qtbot.addWidget(reopened)
    assert reopened.unlock_action.isEnabled() and reopened.chat.change.isHidden()
    assert not reopened.unlock("00000").ok
    assert reopened.unlock("13579").ok
    assert not reopened.chat.change.isHidden() and reopened.tabs.isTabVisible(trainer_tab)
    reopened.close()
    win.close()


def test_simple_mode_shows_the_conversation_and_big_buttons_only(qtbot):
    from muse_desktop.ui.app import MainWindow
    from muse_desktop.ui.theme import MIN_TARGET_PX

    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.resize(1000, 800)
    win.show()
    win.chat.set_user_type(win.page.current())
    win.pages.setCurrentWidget(win.chat)
    win.simple_action.setChecked(True)
    qtbot.wait(20)
    chat = win.chat
    assert not chat.side.isVisible() and not chat.regenerate_button.isVisible() and not chat.copy_button.isVisible()
    assert not chat.change.isVisible() and not chat.change_model.isVisible() and not chat.preference_toggle.isVisible()
    assert not win.tabs.tabBar().isVisible()
    shown = {b.text() for b in (chat.send_button, chat.stop_button, chat.read_button, chat.new_button) if b.isVisible()}
    assert {"Send", "Stop", "New chat"} <= shown
    assert all(b.height() >= 80 > MIN_TARGET_PX for b in (chat.send_button, chat.new_button))
    assert load_settings().settings.simple_mode
    # With a PIN and the lock on, simple mode cannot be switched off.
    win.set_pin("2468")
    win.lock_now()
    win.simple_action.setChecked(False)
    assert win.settings.simple_mode and win.simple_action.isChecked()
    win.close()
