"""Pushing an artefact to the Hugging Face Hub: save it to a temporary folder, then send every file as one
commit (``create_commit`` with one ``CommitOperationAdd`` per file), so a repository is never half-updated."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path


def push_folder(save: Callable[[Path], object], repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload with sid4llm", revision: str | None = None) -> str:
    """Create ``repo_id`` if needed, call ``save(folder)`` and commit the folder's files; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save(folder)
        operations = [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
                      for path in sorted(folder.rglob("*")) if path.is_file()]
        if not operations:
            raise ValueError(f"nothing to push to {repo_id}: the artefact saved no files")
        info = api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message,
                                 revision=revision)
    return str(getattr(info, "commit_url", info))
