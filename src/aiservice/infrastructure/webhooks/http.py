"""Sending webhooks with httpx, to the address the URL guard checked, and resolving hosts with the
system resolver."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from aiservice.application.ports import WebhookResponse


class SocketHostResolver:
    def resolve(self, host: str, port: int) -> list[str]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpxWebhookSender:
    """One connection pool for every webhook; no proxies from the environment (a proxy would resolve the
    host itself, past the check), no redirects, and the receiver's body is never read. The pool is made
    at the first delivery: loading the CA bundle costs tens of milliseconds a service with no webhook
    never needs to spend."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._pool: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def _client(self) -> httpx.Client:
        with self._lock:
            if self._pool is None:
                self._pool = httpx.Client(timeout=self._timeout_s, follow_redirects=False, trust_env=False)
            return self._pool

    def post(self, url: str, address: str, body: bytes, headers: dict[str, str]) -> WebhookResponse:
        started = time.perf_counter()
        try:
            target = httpx.URL(url)
            request = self._client.build_request(
                "POST",
                target.copy_with(host=address),  # connect to the checked address, not a fresh DNS answer
                content=body,
                headers={**headers, "Host": target.netloc.decode("ascii")},
                # TLS still checks the certificate against the URL's name
                extensions={"sni_hostname": target.raw_host.decode("ascii")}
                if target.scheme == "https"
                else {},
            )
            response = self._client.send(request, stream=True)
            response.close()
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            reason = str(exc) or "no answer"
            return WebhookResponse(None, f"{type(exc).__name__}: {reason}", _ms_since(started))
        return WebhookResponse(response.status_code, None, _ms_since(started))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
