"""The Qt layer. The only package allowed to import PySide6."""
