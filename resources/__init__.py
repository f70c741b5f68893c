"""Data files shipped with MUsE Desktop (installed as the package ``muse_resources``).

Nothing here is code; see :mod:`muse_desktop.base.paths` for how they are found.
"""
