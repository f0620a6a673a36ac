"""``--push_to_hub REPO``: upload the exported folder (model card included) to the Hugging Face Hub.

The token is checked before any work (``HF_TOKEN`` or ``hf auth login``), so a missing one costs nothing. The Hub
address is ``huggingface_hub``'s documented ``HF_ENDPOINT`` variable (default ``https://huggingface.co``), read when
the upload starts; tests point it at a local server.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from medgspo.errors import ConfigError

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "HF_ENDPOINT"


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` with the Hub's characters; a one-line error otherwise.

    >>> check_repo_id("me/med-gspo")
    'me/med-gspo'
    """
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ConfigError(f"--push_to_hub {repo_id!r}: expected a Hub repository id like `your-name/med-gspo`")
    return repo_id


def hub_token() -> str:
    """The Hub token ``huggingface_hub`` would use; a one-line error when there is none."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ConfigError("--push_to_hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def push_folder(folder: Path, repo_id: str, token: str, *, private: bool = False) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; return the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=os.environ.get(ENDPOINT_ENV) or None, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, commit_message=f"medgspo export: {folder.name}"
        )
    except (HfHubHTTPError, ValueError, OSError) as exc:  # refused token, rejected card metadata, no connection
        lines = [line.strip("- ").strip() for line in str(exc).splitlines() if line.strip()]
        raise ConfigError(f"--push_to_hub {repo_id}: {' '.join(lines[:2]) or type(exc).__name__}") from None
    logger.info("Uploaded %s to %s", folder, commit.commit_url)
    return commit.commit_url
