""""Get the MUsE dataset": a dataset repository from the hub, with the same checked downloader.

The files come through the hub's dataset API (``/api/datasets/{repo}/revision/{rev}``,
``/datasets/{repo}/resolve/{commit}/{file}``), resumable and checksummed like the
models. Only data files are fetched (JSON Lines, JSON, CSV, Parquet, pickles), never
scripts; a pickle is later read by :mod:`muse_desktop.base.safepickle`, which opens plain
data only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from muse_desktop.models.download import DownloadError, RepoType, download_repo, endpoint_from_env, list_repo
from muse_desktop.base.events import CancelToken, Done, Event

MUSE_DATASET = "seohyunqkr/MUsE"
DATA_PATTERNS = ("*.jsonl", "*.json", "*.csv", "*.parquet", "*.pkl", "*.pickle")
NOT_DATA = ("dataset_infos.json", "dataset_info.json", "state.json")  # metadata beside the rows


def dataset_dir(repo: str, root: str | os.PathLike[str] | None = None) -> Path:
    from muse_desktop.base.paths import user_dirs

    return (Path(root) if root else user_dirs().data / "datasets") / repo.replace("/", "--")


def get_dataset(
    repo: str = MUSE_DATASET,
    dest: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Download a dataset repository's data files; Done's path is the data file (or the folder)."""
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    folder = Path(dest) if dest else dataset_dir(repo)
    listing = list_repo(repo, revision, endpoint, RepoType.DATASET)
    names = [f.name for f in listing.select(DATA_PATTERNS)
             if Path(f.name).name not in NOT_DATA and not Path(f.name).name.startswith(".")]
    if not names:
        raise DownloadError(f"The data set '{repo}' has no data files (JSON Lines, JSON, CSV, Parquet or pickle).")
    for event in download_repo(repo, folder, names, endpoint=endpoint, cancel=cancel, listing=listing):
        if not isinstance(event, Done):
            yield event
    path = folder / names[0] if len(names) == 1 else folder
    yield Done(f"The data set {repo} is ready ({len(names)} file{'s' if len(names) > 1 else ''}).", str(path),
               {"repo": repo, "commit": listing.commit, "files": names})
