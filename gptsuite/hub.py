"""Whether the Hugging Face hub can be reached, found out in seconds.

huggingface_hub and datasets retry a request that fails for want of a network for half a minute
(`Retrying in 8s` lines) before their error; one HEAD request with a short timeout and no retries
answers first. GPT-2's weights (pretrained.py) and the hub datasets (data/<name>/prepare.py)
ask it before they download.
"""

import contextlib
import os
from collections.abc import Iterator

REACH_TIMEOUT = 5  # seconds the hub may take to answer before it counts as unreachable


def unreachable(url: str) -> str | None:
    """Why the hub cannot be asked for `url` now (HF_HUB_OFFLINE is set; no network, DNS, a proxy,
    a timeout, an HTTP error), in one line; None when it answers. HF_HUB_ETAG_TIMEOUT, if set,
    replaces the timeout."""
    from huggingface_hub import constants, get_hf_file_metadata

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    timeout = constants.HF_HUB_ETAG_TIMEOUT if os.environ.get("HF_HUB_ETAG_TIMEOUT") else REACH_TIMEOUT
    try:
        get_hf_file_metadata(url, timeout=timeout)
    except Exception as e:  # in whatever exception types this version raises
        slow = f"; on a slow network set HF_HUB_ETAG_TIMEOUT to more than {timeout:g} seconds" if "timeout" in type(e).__name__.lower() else ""
        return f"{constants.ENDPOINT}: {first_line(e)}{slow}"
    return None


def dataset_unreachable(repo: str) -> str | None:
    """unreachable() for a hub dataset: the README.md that `datasets` asks for first."""
    from huggingface_hub import hf_hub_url

    return unreachable(hf_hub_url(repo, "README.md", repo_type="dataset"))


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """`datasets` and huggingface_hub in offline mode, as HF_HUB_OFFLINE=1 sets it at import: a
    dataset in the local cache loads, one that is not fails at once, without retries."""
    import datasets
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
