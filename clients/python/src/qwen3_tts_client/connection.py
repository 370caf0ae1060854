"""Where the server is and how to authenticate: arguments first, then the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from qwen3_tts_client.retry import RetryPolicy

URL_ENV = "QWEN3_TTS_URL"
KEY_ENV = "QWEN3_TTS_API_KEY"
DEFAULT_URL = "http://localhost:8000"
#: Long enough for a long text or a batch on a CPU server (minutes); streams read piece by
#: piece, so this bounds the wait for each piece, not the whole stream.
DEFAULT_TIMEOUT_S = 600.0


def _user_agent() -> str:
    try:
        return f"qwen3-tts-client/{version('qwen3-tts-client')}"
    except PackageNotFoundError:  # run from a source tree
        return "qwen3-tts-client"


@dataclass(frozen=True)
class Connection:
    """`base_url` without a trailing slash (it may carry a path, behind a proxy), the API key
    (None: calls are sent without one and the server answers 401), the timeout of each
    request in seconds and the retry policy."""

    base_url: str
    api_key: str | None = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
    ) -> Connection:
        """Arguments win; unset ones come from QWEN3_TTS_URL and QWEN3_TTS_API_KEY."""
        url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        return cls(
            base_url=url.rstrip("/"),
            api_key=key.strip() if key and key.strip() else None,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries, max_wait=max_retry_wait),
        )

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": _user_agent()}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def http_options(self) -> dict[str, Any]:
        """Keyword arguments for httpx.Client / httpx.AsyncClient."""
        return {"base_url": self.base_url, "headers": self.headers(), "timeout": self.timeout}
