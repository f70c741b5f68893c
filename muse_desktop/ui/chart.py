"""A small line chart for loss curves, drawn with QPainter.

QtCharts is not in PySide6-Essentials (it would add the whole Addons package to the
installers), and two curves need little: axes with numbers, a solid line for the
training loss and a dashed one with square markers for the validation loss, so that
the two differ by more than colour. The accessible description says the latest values
in words for screen readers.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

STYLES = {  # name: (label, pen style, marker)
    "train_loss": ("Training loss", Qt.SolidLine, False),
    "val_loss": ("Validation loss", Qt.DashLine, True),
}


class LossChart(QWidget):
    def __init__(self, labels: dict[str, str] | None = None):
        """``labels``: the curves to show with the words for them (default: both, in the Trainer's words)."""
        super().__init__()
        self.styles = {name: (labels.get(name, label) if labels else label, style, marker)
                       for name, (label, style, marker) in STYLES.items() if not labels or name in labels}
        self.series: dict[str, list[tuple[int, float]]] = {name: [] for name in self.styles}
        self.total_steps = 0
        self.setMinimumHeight(220)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAccessibleName("Loss chart")
        self._describe()

    def clear(self, total_steps: int = 0) -> None:
        for points in self.series.values():
            points.clear()
        self.total_steps = total_steps
        self._describe()
        self.update()

    def add(self, name: str, step: int, value: float) -> None:
        if name in self.series:
            self.series[name].append((step, value))
            self._describe()
            self.update()

    def _describe(self) -> None:
        parts = []
        for name, (label, _style, _marker) in self.styles.items():
            points = self.series[name]
            if points:
                parts.append(f"{label} {points[-1][1]:.3f} at step {points[-1][0]} (started at {points[0][1]:.3f})")
        self.setAccessibleDescription("; ".join(parts) or "No training yet.")

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        text = self.palette().windowText().color()
        accent = QColor("#0B5CAD") if text.lightness() < 128 else QColor("#8AB4F8")
        metrics = painter.fontMetrics()
        left = metrics.horizontalAdvance("00.00") + 14
        legend_height = metrics.height() + 10
        plot = QRectF(left, legend_height + 6, self.width() - left - 12,
                      self.height() - legend_height - metrics.height() - 22)
        painter.setPen(QPen(text, 1))
        painter.drawRect(plot)
        points = [p for series in self.series.values() for p in series]
        # Legend: the line style drawn next to the words.
        x = left
        for name, (label, style, marker) in self.styles.items():
            painter.setPen(QPen(accent if name == "train_loss" else text, 3, style))
            painter.drawLine(QPointF(x, legend_height / 2 + 2), QPointF(x + 36, legend_height / 2 + 2))
            if marker:
                painter.drawRect(QRectF(x + 14, legend_height / 2 - 2, 8, 8))
            painter.setPen(text)
            painter.drawText(QPointF(x + 44, legend_height / 2 + metrics.ascent() / 2), label)
            x += 60 + metrics.horizontalAdvance(label)
        if not points:
            painter.drawText(plot, Qt.AlignCenter, "The loss appears here as the model learns.")
            return
        max_step = max(self.total_steps, max(s for s, _ in points), 1)
        low, high = min(v for _, v in points), max(v for _, v in points)
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        low = max(0.0, low - 0.05 * (high - low))

        def at(step: float, value: float) -> QPointF:
            return QPointF(plot.left() + plot.width() * step / max_step,
                           plot.bottom() - plot.height() * (value - low) / (high - low))

        for fraction in (0.0, 0.5, 1.0):
            value = low + (high - low) * fraction
            y = plot.bottom() - plot.height() * fraction
            painter.drawText(QRectF(0, y - metrics.height() / 2, left - 6, metrics.height()),
                             Qt.AlignRight | Qt.AlignVCenter, f"{value:.2f}")
        painter.drawText(QRectF(plot.left(), plot.bottom() + 4, plot.width(), metrics.height()),
                         Qt.AlignLeft, "step 0")
        painter.drawText(QRectF(plot.left(), plot.bottom() + 4, plot.width(), metrics.height()),
                         Qt.AlignRight, f"step {max_step}")
        for name, (_label, style, marker) in self.styles.items():
            series = self.series[name]
            if not series:
                continue
            pen = QPen(accent if name == "train_loss" else text, 2.5, style)
            painter.setPen(pen)
            path = QPainterPath(at(*series[0]))
            for step, value in series[1:]:
                path.lineTo(at(step, value))
            painter.drawPath(path)
            if marker and len(series) <= 40:  # beyond that the squares would merge into a band
                for step, value in series:
                    point = at(step, value)
                    painter.drawRect(QRectF(point.x() - 4, point.y() - 4, 8, 8))
