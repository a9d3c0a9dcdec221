"""The fronts' client to replicas: aiohttp with kept-alive connections per endpoint.

The body goes out as the bytes it came in as, and the answer comes back the same way: no parse, no
re-encode. Only a failure before any response (refused, reset, a timeout to connect) counts as
unreachable, so the caller may send it once more; a replica's own error answer is passed back as is.

Why aiohttp and not httpx (which the service uses elsewhere): at 32 concurrent requests through two
workers, httpx's ``AsyncClient`` forwarded about 330 requests/s where the replicas alone answered
2,900 (``bench/deployments.py``); its pool, not the network, was the bottleneck. The session is made
in the event loop of the first request and closed by the app's lifespan.
"""

from __future__ import annotations

import aiohttp

from aiservice.application.deploying.ports import Forwarded, ReplicaUnreachable

PASSED_BACK = ("retry-after", "www-authenticate", "inference-header-content-length")


class AiohttpReplicaClient:
    def __init__(self, timeout_s: float = 60.0, connect_timeout_s: float = 2.0, pool: int = 256) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._pool, limit_per_host=self._pool, ttl_dns_cache=300
                ),
                timeout=self._timeout,
                trust_env=False,  # loopback or cluster addresses: never a proxy from the environment
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def send(self, endpoint: str, path: str, body: bytes, headers: dict[str, str]) -> Forwarded:
        try:
            async with self._client().post(endpoint + path, data=body, headers=headers) as response:
                content = await response.read()
                kept = tuple((k, v) for k, v in response.headers.items() if k.lower() in PASSED_BACK)
                return Forwarded(
                    status=response.status,
                    content_type=response.headers.get("Content-Type", "application/json"),
                    body=content,
                    headers=kept,
                )
        except (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError) as error:
            raise ReplicaUnreachable(type(error).__name__) from None
        except TimeoutError as error:
            raise ReplicaUnreachable("timed out") from error

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
