"""Figures without pyplot, and output paths checked before the work that fills them.

The library's pictures are drawn on a :class:`matplotlib.figure.Figure` made directly, with an
Agg canvas (:func:`new_figure`): no pyplot, so no figure is registered globally (nothing to
leak when drawing fails) and the user's matplotlib backend is never switched.

Output paths are checked up front, before minutes of sampling or training:

- :func:`check_figure_path`: the file a figure will be saved to (a format matplotlib can
  write; no extension means PNG; never an existing directory); its folder is created.
- :func:`ensure_folder`: an output folder, created with its parents (``mkdir -p``), refused
  with the path and the reason when a file is in the way or it cannot be created or written.

References: J. D. Hunter. *Matplotlib: A 2D graphics environment.* Computing in Science &
Engineering 9(3), 2007.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["check_figure_path", "ensure_folder", "figure_formats", "new_figure", "save_figure"]

#: the format of a figure path given without an extension
DEFAULT_SUFFIX = ".png"


def figure_formats() -> list[str]:
    """The file extensions matplotlib can save a figure as (``canvas.get_supported_filetypes``).

    >>> {"png", "pdf", "svg"} <= set(figure_formats())
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return sorted(FigureCanvasAgg.get_supported_filetypes())


def ensure_folder(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``folder`` with its parents (``mkdir -p``) unless it exists, and return it.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     ensure_folder(Path(d) / "a" / "b").is_dir()
    True

    :raises TypeError: ``folder`` is not a path.
    :raises NotADirectoryError: ``folder`` or one of its parents is a file.
    :raises PermissionError: ``folder`` cannot be created or written to.
    :raises OSError: any other reason the folder cannot be created (the reason is named).
    """
    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"the {what} must be a path (str or Path), got {type(folder).__name__}")
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            where = "is a file" if part == folder else f"cannot be created: {part} is a file"
            raise NotADirectoryError(f"the {what} {folder} {where}; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(f"the {what} {folder} cannot be created: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} {folder} is not writable; choose another folder")
    return folder


def check_figure_path(path: str | os.PathLike[str], name: str = "path") -> Path:
    """The file a figure will be written to, checked before any drawing: its extension must be
    a format of :func:`figure_formats` (none: ``.png`` is appended, and the returned path says
    so), it must not be an existing directory, and its folder is created (:func:`ensure_folder`).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     check_figure_path(f"{d}/figures/e").relative_to(d).as_posix()
    'figures/e.png'
    >>> check_figure_path("e.xyz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: path must end in a figure format (.png, .pdf, .svg, ...), got 'e.xyz'; ...

    :raises TypeError: ``path`` is not a ``str`` or path.
    :raises ValueError: an unsupported extension, or an existing directory.
    :raises NotADirectoryError: a file where its folder should be (see :func:`ensure_folder`).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if str(path) in ("", ".") or path.is_dir():
        raise ValueError(
            f"{name} must be a file name, got the directory {str(path)!r}; give a file such as "
            f"{str(path / ('figure' + DEFAULT_SUFFIX))!r}"
        )
    if not path.suffix:
        path = path.with_name(path.name + DEFAULT_SUFFIX)
        if path.is_dir():
            raise ValueError(f"{name} {str(path)!r} is an existing directory, not a file")
    formats = figure_formats()
    if path.suffix[1:].lower() not in formats:
        raise ValueError(
            f"{name} must end in a figure format (.png, .pdf, .svg, ...), got {str(path)!r}; "
            f"supported: {', '.join(formats)}"
        )
    try:
        ensure_folder(path.parent, "folder")
    except OSError as err:
        raise type(err)(f"{name} {str(path)!r} cannot be written: {err}") from None
    return path


def new_figure(**options: Any) -> Figure:
    """A figure with an Agg canvas, outside pyplot: ``options`` go to
    :class:`matplotlib.figure.Figure` (``figsize``, ``layout``); draw with
    ``fig.subplots(...)`` and write with :func:`save_figure`. It is garbage-collected like any
    object: nothing to close, and the backend of pyplot is left alone.

    >>> fig = new_figure(figsize=(2, 2))
    >>> type(fig.canvas).__name__
    'FigureCanvasAgg'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**options)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: float) -> Path:
    """Write ``fig`` to ``path`` (checked by :func:`check_figure_path`) in the format its
    extension names, and return ``path``, the file written.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_figure(new_figure(figsize=(1, 1)), check_figure_path(f"{d}/f"), dpi=20)
    ...     p.name, p.read_bytes()[:4]
    ('f.png', b'\\x89PNG')
    """
    fig.savefig(path, dpi=dpi, format=path.suffix[1:].lower())
    return path
