"""Calling the Databento Historical API: bounded retries, error translation, vendor warnings.

The ``databento`` client does not retry ``timeseries``/``symbology``/``metadata`` calls. :class:`Caller`
retries HTTP 429 (honouring ``Retry-After``), 5xx and dropped connections with bounded exponential
backoff, then raises :class:`~hdi_lab.errors.RateLimitError` / :class:`~hdi_lab.errors.UnavailableError`.
Other 4xx answers become one-line errors that say what to change. The API key never appears in a
message: any text taken from the vendor is scrubbed of it.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
from databento.common.error import BentoError, BentoHttpError, BentoServerError

from hdi_lab.dbn import vendor_warnings
from hdi_lab.errors import AuthError, ProviderError, RateLimitError, UnavailableError

__all__ = ["NAME", "Caller", "close_abandoned_files"]

log = logging.getLogger(__name__)
NAME = "databento"

#: (substring of the vendor's message, what to change) for 4xx answers, first match wins
_HINTS: tuple[tuple[str, str], ...] = (
    ("symbol", "check the symbols and stype_in (raw_symbol ESH4, parent ES.FUT, continuous ES.c.0)"),
    ("start", "check start/end: start must be before end and inside the dataset's available range"),
    ("end", "check start/end: end must be after start and not after the dataset's available end"),
    ("range", "choose a range inside the dataset's available range"),
    ("dataset", "check the dataset code, e.g. GLBX.MDP3 or XNAS.ITCH"),
    ("schema", "check the schema against the dataset's schemas"),
)


@dataclass
class Caller:
    """Runs client calls with retries; collects the vendor's warnings (``X-Warning``)."""

    key: str = field(repr=False)  # the API key: never in a repr
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    warnings: list[str] = field(default_factory=list)

    def __call__[T](self, what: str, fn: Callable[[], T], on_retry: Callable[[], None] | None = None) -> T:
        """``fn()`` with retries; ``what`` names the call in messages; ``on_retry`` cleans up between tries.

        Raises AuthError for a rejected key, ProviderError for another refused request, RateLimitError or
        UnavailableError when rate limits, server errors or the network outlast the retries."""
        attempt = 0
        while True:
            try:
                out, notes = vendor_warnings.call(fn)
                self.warnings += [self.scrub(m) for m in notes]
                return out
            except BentoHttpError as exc:
                status = int(exc.http_status)
                if status != 429 and status < 500:
                    raise self.client_error(what, exc) from None
                if attempt >= self.retries:
                    raise self.exhausted(what, exc, attempt) from None
                delay = self.delay(attempt, exc.headers.get("Retry-After") if exc.headers else None)
                log.warning("%s: HTTP %s, retry %d/%d in %.2f s", what, status, attempt + 1, self.retries, delay)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.retries:
                    raise UnavailableError(
                        f"Databento {what}: the gateway could not be reached after {attempt + 1} tries "
                        f"({type(exc).__name__}): check the network and HDI_DATABENTO_GATEWAY, then re-run "
                        "(completed chunks are kept)",
                        provider=NAME,
                    ) from None
                delay = self.delay(attempt, None)
            except BentoError as exc:  # the connection broke off mid-download ("Error streaming response")
                close_abandoned_files(exc)
                if attempt >= self.retries:
                    raise UnavailableError(
                        f"Databento {what}: the download broke off {attempt + 1} times "
                        f"({self.scrub(str(exc))[:120]}): check the network, then re-run (completed chunks "
                        "are kept; nothing from this one was stored)",
                        provider=NAME,
                    ) from None
                log.warning("%s: download broke off, retry %d/%d", what, attempt + 1, self.retries)
                delay = self.delay(attempt, None)
            if on_retry is not None:
                on_retry()
            self.sleep(delay)
            attempt += 1

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before retry ``attempt + 1``: the server's Retry-After, else exponential backoff."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.backoff_max)
            except ValueError:
                pass  # an HTTP date: fall back to exponential backoff
        return float(min(self.backoff * 2**attempt, self.backoff_max))

    def scrub(self, text: str) -> str:
        """``text`` with the API key masked."""
        return text.replace(self.key, "****") if self.key else text

    def detail(self, exc: BentoHttpError) -> str:
        """The server's one-line explanation of ``exc`` (scrubbed, at most 240 characters)."""
        body = exc.json_body if isinstance(exc.json_body, dict) else {}
        detail = body.get("detail", exc.message)
        if isinstance(detail, dict):
            detail = detail.get("message", "")
        text = " ".join(str(detail or "").split()) or "no detail given"
        return self.scrub(text)[:240]

    def client_error(self, what: str, exc: BentoHttpError) -> ProviderError:
        """The error to raise for a refused request (HTTP 4xx but 429): AuthError for 401/403."""
        status, detail, rid = int(exc.http_status), self.detail(exc), exc.request_id
        if status in (401, 403):
            return AuthError(
                f"Databento rejected the API key (HTTP {status}): set HDI_DATABENTO_API_KEY (or DATABENTO_API_KEY) "
                "to a valid key from https://databento.com/portal/keys",
                provider=NAME,
                status=status,
                request_id=rid,
            )
        low = detail.lower()
        hint = next((h for k, h in _HINTS if k in low), "check the request's parameters")
        return ProviderError(
            f"Databento refused {what} (HTTP {status}: {detail}): {hint}", provider=NAME, status=status, request_id=rid
        )

    def exhausted(self, what: str, exc: BentoHttpError, attempt: int) -> ProviderError:
        """The error to raise when retries ran out: RateLimitError for 429, else UnavailableError."""
        status, rid = int(exc.http_status), exc.request_id
        tries = f"{attempt + 1} {'try' if attempt == 0 else 'tries'}"
        if status == 429:
            return RateLimitError(
                f"Databento {what}: still rate-limited (HTTP 429) after {tries}: wait and re-run "
                "(completed chunks are kept) or raise HDI_DATABENTO_RETRIES",
                provider=NAME,
                status=status,
                request_id=rid,
            )
        kind = "server error" if isinstance(exc, BentoServerError) else "error"
        return UnavailableError(
            f"Databento {what}: {kind} HTTP {status} ({self.detail(exc)}) after {tries}: re-run later "
            "(completed chunks are kept and skipped)",
            provider=NAME,
            status=status,
            request_id=rid,
        )


def close_abandoned_files(exc: BaseException) -> None:
    """Close the files the client left open when ``exc`` interrupted it: the download it was writing
    when the connection broke off, or the downloaded file a DBNStore was reading when its header
    failed to decode."""
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        source = local.get("data_source")
        for f in (local.get("writer"), getattr(source, "_FileDataSource__buffer", None)):
            if isinstance(f, io.IOBase):
                f.close()
        tb = tb.tb_next
