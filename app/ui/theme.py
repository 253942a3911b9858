"""Colours and fonts: a calm light and dark palette, the Fusion style, and a small style sheet."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from app.resources import icon_path


@dataclass(frozen=True)
class Theme:
    """Every colour the app paints with; views read these instead of hard-coding colours."""

    name: str  # "light" or "dark"
    window: str
    base: str
    sidebar: str
    text: str
    muted: str
    border: str
    accent: str
    accent_text: str
    user_bubble: str
    code_bg: str
    code_border: str
    inline_code_bg: str
    hover: str
    selection: str
    error: str
    warning_bg: str
    pygments_style: str

    @property
    def dark(self) -> bool:
        return self.name == "dark"

    def color(self, name: str) -> QColor:
        return QColor(getattr(self, name))


LIGHT = Theme(
    name="light",
    window="#f6f5f2",
    base="#ffffff",
    sidebar="#eeece7",
    text="#1f2328",
    muted="#6b6f76",
    border="#dedbd3",
    accent="#c4572e",
    accent_text="#ffffff",
    user_bubble="#f3e6de",
    code_bg="#f5f4f0",
    code_border="#e2dfd7",
    inline_code_bg="#ecebe6",
    hover="#e6e3dc",
    selection="#f0d2c2",
    error="#b3261e",
    warning_bg="#fbefd9",
    pygments_style="default",
)

DARK = Theme(
    name="dark",
    window="#1d1e21",
    base="#232428",
    sidebar="#18191b",
    text="#e4e4e2",
    muted="#999ca3",
    border="#34363b",
    accent="#e07b50",
    accent_text="#1d1e21",
    user_bubble="#37302c",
    code_bg="#17181a",
    code_border="#303236",
    inline_code_bg="#303236",
    hover="#2c2e32",
    selection="#5a3a2c",
    error="#f2827a",
    warning_bg="#3d3322",
    pygments_style="github-dark",
)

_current: Theme = LIGHT


def current() -> Theme:
    """The theme in use (views call this at paint time, so a switch repaints with the new colours)."""
    return _current


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def resolve(choice: str) -> Theme:
    """'system', 'light' or 'dark' -> the Theme to use."""
    if choice == "dark" or (choice == "system" and system_prefers_dark()):
        return DARK
    return LIGHT


def ui_font() -> QFont:
    font = QFont(QGuiApplication.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    return font


def mono_font() -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSizeF(max(9.0, ui_font().pointSizeF() - 0.5))
    return font


def _palette(theme: Theme) -> QPalette:
    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: theme.window,
        QPalette.ColorRole.WindowText: theme.text,
        QPalette.ColorRole.Base: theme.base,
        QPalette.ColorRole.AlternateBase: theme.window,
        QPalette.ColorRole.Text: theme.text,
        QPalette.ColorRole.Button: theme.base,
        QPalette.ColorRole.ButtonText: theme.text,
        QPalette.ColorRole.Highlight: theme.accent,
        QPalette.ColorRole.HighlightedText: theme.accent_text,
        QPalette.ColorRole.ToolTipBase: theme.base,
        QPalette.ColorRole.ToolTipText: theme.text,
        QPalette.ColorRole.PlaceholderText: theme.muted,
        QPalette.ColorRole.Link: theme.accent,
        QPalette.ColorRole.Mid: theme.border,
        QPalette.ColorRole.Midlight: theme.hover,
        QPalette.ColorRole.Dark: theme.border,
        QPalette.ColorRole.Light: theme.base,
    }
    for role, colour in roles.items():
        palette.setColor(role, QColor(colour))
    disabled = QColor(theme.muted)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return palette


def style_sheet(theme: Theme) -> str:
    """Widget styling the palette cannot express: rounded inputs, flat tool buttons, object-name roles."""
    t = theme
    down = icon_path(f"chevron-down-{t.name}.svg").as_posix()
    up = icon_path(f"chevron-up-{t.name}.svg").as_posix()
    return f"""
QWidget#Sidebar {{ background: {t.sidebar}; }}
QWidget#Sidebar QListView {{ background: {t.sidebar}; border: none; }}
QListView#ConversationList::item {{ padding: 6px 8px; border-radius: 6px; }}
QListView#ConversationList::item:selected {{ background: {t.hover}; color: {t.text}; }}
QListView#ConversationList::item:hover {{ background: {t.hover}; }}
QLineEdit, QPlainTextEdit, QSpinBox, QDoubleSpinBox, QComboBox {{
    border: 1px solid {t.border}; border-radius: 6px; padding: 4px 6px; background: {t.base};
    selection-background-color: {t.selection}; selection-color: {t.text};
}}
QComboBox::drop-down {{ border: none; width: 22px; subcontrol-origin: padding; subcontrol-position: center right; }}
QComboBox::down-arrow {{ image: url({down}); width: 12px; height: 12px; }}
QAbstractSpinBox::up-button, QAbstractSpinBox::down-button {{ border: none; width: 18px; background: transparent; }}
QAbstractSpinBox::up-button {{ subcontrol-origin: border; subcontrol-position: top right; }}
QAbstractSpinBox::down-button {{ subcontrol-origin: border; subcontrol-position: bottom right; }}
QAbstractSpinBox::up-arrow {{ image: url({up}); width: 10px; height: 10px; }}
QAbstractSpinBox::down-arrow {{ image: url({down}); width: 10px; height: 10px; }}
QAbstractSpinBox::up-button:hover, QAbstractSpinBox::down-button:hover {{ background: {t.hover}; }}
QComboBox QAbstractItemView {{ border: 1px solid {t.border}; background: {t.base}; outline: none;
    selection-background-color: {t.selection}; selection-color: {t.text}; }}
QLineEdit:focus, QPlainTextEdit:focus, QSpinBox:focus, QDoubleSpinBox:focus, QComboBox:focus {{
    border: 1px solid {t.accent};
}}
QFrame#ComposerFrame {{ border: 1px solid {t.border}; border-radius: 12px; background: {t.base}; }}
QFrame#ComposerFrame QPlainTextEdit {{ border: none; background: transparent; padding: 2px; }}
QPushButton {{
    border: 1px solid {t.border}; border-radius: 6px; padding: 5px 12px; background: {t.base};
}}
QPushButton:hover {{ background: {t.hover}; }}
QPushButton:disabled {{ color: {t.muted}; }}
QPushButton#Primary {{ background: {t.accent}; color: {t.accent_text}; border: 1px solid {t.accent}; }}
QPushButton#Primary:hover {{ background: {t.accent}; }}
QPushButton#Primary:disabled {{ background: {t.border}; border-color: {t.border}; color: {t.muted}; }}
QPushButton#NavButton {{ border: none; background: transparent; padding: 6px 12px; color: {t.muted}; }}
QPushButton#NavButton:checked {{ color: {t.text}; background: {t.hover}; }}
QToolButton {{ border: none; border-radius: 6px; padding: 4px; }}
QToolButton:hover {{ background: {t.hover}; }}
QLabel#Muted {{ color: {t.muted}; }}
QLabel#Error {{ color: {t.error}; }}
QLabel#Heading {{ font-size: 15pt; font-weight: 600; }}
QLabel#SectionTitle {{ font-weight: 600; color: {t.muted}; }}
QFrame#Notice {{ background: {t.warning_bg}; border-radius: 8px; }}
QFrame#Card {{ background: {t.base}; border: 1px solid {t.border}; border-radius: 12px; }}
QWidget#SettingsPanel {{ background: {t.sidebar}; }}
QWidget#TopBar {{ border-bottom: 1px solid {t.border}; }}
QTableView {{ border: 1px solid {t.border}; border-radius: 6px; background: {t.base};
    selection-background-color: {t.selection}; selection-color: {t.text}; gridline-color: {t.border}; }}
QHeaderView::section {{ background: {t.window}; border: none; border-bottom: 1px solid {t.border};
    padding: 4px 6px; color: {t.muted}; }}
QProgressBar {{ border: none; border-radius: 3px; background: {t.border}; max-height: 6px; }}
QProgressBar::chunk {{ border-radius: 3px; background: {t.accent}; }}
QStatusBar {{ color: {t.muted}; }}
QStatusBar QLabel {{ color: {t.muted}; padding: 0 6px; }}
QSplitter::handle {{ background: {t.border}; }}
QScrollArea {{ border: none; }}
"""


def apply(app: QApplication, choice: str) -> Theme:
    """Apply 'system' / 'light' / 'dark' to the whole application; returns the theme now in use."""
    global _current
    _current = resolve(choice)
    app.setStyle("Fusion")  # the same look on every platform, and one that honours the palette fully
    app.setPalette(_palette(_current))
    app.setFont(ui_font())
    app.setStyleSheet(style_sheet(_current))
    return _current
