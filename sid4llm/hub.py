"""Pushing an artefact to the Hugging Face Hub: save it to a temporary folder, upload that as one commit."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path


def push_folder(save: Callable[[Path], object], repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload with sid4llm", revision: str | None = None) -> str:
    """Create ``repo_id`` if needed, call ``save(folder)`` and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp))
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message, revision=revision)
    return str(getattr(info, "commit_url", info))
