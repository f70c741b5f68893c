"""Colours and text size. Contrast is checked by the tests (WCAG 2.2: 4.5:1 normal, 7:1 high contrast)."""

from __future__ import annotations

from muse_desktop.household.settings import Theme

BASE_POINT_SIZE = 14  # large text by default; zoom multiplies it
MIN_TARGET_PX = 44  # WCAG 2.2 target size at default zoom

PALETTES = {
    Theme.NORMAL: {
        "window": "#FAFAF7",
        "text": "#1A1A1A",
        "muted": "#4A4A4A",
        "accent": "#0B5CAD",
        "accent_text": "#FFFFFF",
        "field": "#FFFFFF",
        "border": "#6B6B6B",
        "focus": "#B34700",
        "error": "#A4000F",
        "disabled": "#5C5C5C",
    },
    Theme.DARK: {
        "window": "#1C1C1E",
        "text": "#F2F2F2",
        "muted": "#C9C9C9",
        "accent": "#8AB4F8",
        "accent_text": "#0A1A33",
        "field": "#2C2C2E",
        "border": "#A0A0A0",
        "focus": "#FFB86B",
        "error": "#FF9A8F",
        "disabled": "#A8A8A8",
    },
    Theme.HIGH_CONTRAST: {
        "window": "#000000",
        "text": "#FFFFFF",
        "muted": "#F0F0F0",
        "accent": "#FFE600",
        "accent_text": "#000000",
        "field": "#000000",
        "border": "#FFFFFF",
        "focus": "#00E5FF",
        "error": "#FF8A80",
        "disabled": "#B0B0B0",
    },
}


def stylesheet(theme: str, zoom_percent: int) -> str:
    p = PALETTES.get(theme, PALETTES[Theme.NORMAL])
    size = round(BASE_POINT_SIZE * zoom_percent / 100)
    return f"""
* {{ font-size: {size}pt; }}
QWidget {{ background: {p['window']}; color: {p['text']}; }}
QFrame#choice {{ border: 2px solid {p['border']}; border-radius: 10px; }}
QFrame#choice QLabel {{ border: none; }}
QProgressBar {{ border: 2px solid {p['border']}; border-radius: 6px; background: {p['field']};
    color: {p['text']}; text-align: center; }}
QProgressBar::chunk {{ background: {p['accent']}; }}
QLabel#heading {{ font-size: {round(size * 1.6)}pt; font-weight: bold; }}
QLabel#muted {{ color: {p['muted']}; }}
QLabel#error {{ color: {p['error']}; font-weight: bold; }}
QLabel#lockMark {{ background: {p['accent']}; color: {p['accent_text']}; font-weight: bold;
    border-radius: 6px; padding: 4px 12px; margin: 2px 6px; }}
QLineEdit, QListWidget {{ background: {p['field']}; color: {p['text']};
    border: 2px solid {p['border']}; border-radius: 6px; padding: 6px; }}
/* The placeholder in the theme's muted colour: with a style sheet Qt draws it as the text at half
   strength (3.4:1 on white, 5.3:1 in high contrast), whatever the palette says. */
QLineEdit, QPlainTextEdit, QTextEdit {{ placeholder-text-color: {p['muted']}; }}
QListWidget::item {{ padding: 8px; min-height: 28px; }}  /* with the padding, a 44 px row */
QListWidget::item:selected {{ background: {p['accent']}; color: {p['accent_text']}; }}
QPushButton {{ background: {p['field']}; color: {p['text']}; border: 2px solid {p['border']};
    border-radius: 10px; padding: 10px 18px; min-height: {MIN_TARGET_PX}px; min-width: {MIN_TARGET_PX}px; }}
QPushButton#compact {{ padding: 4px 12px; }}
QPushButton#score {{ padding: 4px 8px; }}
QPushButton:checked, QPushButton#primary {{ background: {p['accent']}; color: {p['accent_text']};
    border-color: {p['accent']}; }}
QLabel#userBubble {{ background: {p['field']}; border: 2px solid {p['border']}; border-radius: 10px;
    padding: 10px; margin-left: 60px; }}
QLabel#assistantBubble {{ background: {p['window']}; border: 2px solid {p['accent']}; border-radius: 10px;
    padding: 10px; margin-right: 60px; }}
*:focus {{ outline: none; border: 4px solid {p['focus']}; }}
/* Focus must win over the styles above (their object names outrank "*"), and a ring is
   not seen against the accent: a focused accent button turns to the field colour. */
QPushButton:focus, QPushButton#primary:focus, QPushButton#compact:focus, QPushButton#score:focus,
QPushButton:checked:focus, QPushButton#score:checked:focus,
QLabel#userBubble:focus, QLabel#assistantBubble:focus {{ border: 4px solid {p['focus']}; }}
QPushButton#primary:focus, QPushButton:checked:focus, QPushButton#score:checked:focus {{ background: {p['field']}; color: {p['text']}; }}
QPushButton:disabled {{ color: {p['disabled']}; border-style: dashed; font-style: italic; }}
QPushButton#primary:disabled {{ background: {p['field']}; color: {p['disabled']}; border-color: {p['border']}; }}
QMenuBar, QMenu {{ background: {p['window']}; color: {p['text']}; }}
QMenu::item:selected, QMenuBar::item:selected {{ background: {p['accent']}; color: {p['accent_text']}; }}
QMenu::item:disabled {{ color: {p['disabled']}; font-style: italic; }}
QCheckBox::indicator, QListWidget::indicator {{ width: 22px; height: 22px; border: 2px solid {p['border']};
    border-radius: 4px; background: {p['field']}; }}
QCheckBox::indicator:checked, QListWidget::indicator:checked {{ background: {p['accent']}; border-color: {p['text']}; }}
QCheckBox:focus {{ border: 4px solid {p['focus']}; border-radius: 6px; }}
"""


def placeholder_colour(theme: str) -> str:
    """Placeholder text ("Type your question here"): Qt's default grey is 3.4:1; the muted colour is not."""
    return PALETTES.get(theme, PALETTES[Theme.NORMAL])["muted"]


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two '#RRGGBB' colours."""
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)
