"""A pooled keep-alive client is never cut off by the server closing an idle connection under it (issue 18).

uvicorn closed connections idle 5 s, just when httpx's pool still reused them (its own expiry is 5 s
too): a request sent on a connection idle for just under 5 s got "Server disconnected without sending
a response", more often the busier the server. The services now keep idle connections 75 s and their
own clients reuse one for 30 s at most (services/common/runtime.py ``server_config``, ``http_client``).
This runs the services' own server configuration and client on a small app, without the network.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI, Request

from services.common.embedded import free_port
from services.common.runtime import http_client, server_config
from services.common.settings import ServiceSettings


def serve_small_app(tmp_path):
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict:
        return {"port": request.client.port}

    @app.get("/busy")
    async def busy(request: Request) -> dict:
        time.sleep(0.02)  # holds the loop, as a loaded service does: timers and reads run late
        return {"port": request.client.port}

    settings = ServiceSettings(service="test", tenant="test", database_url="postgresql+psycopg://test@127.0.0.1/test", keys_dir=tmp_path,
                               private_key=tmp_path / "none.key", port=free_port())
    server = uvicorn.Server(server_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return server, thread, settings


def test_the_server_keeps_idle_connections_longer_than_clients_reuse_them(tmp_path):
    server, thread, settings = serve_small_app(tmp_path)
    assert server.config.timeout_keep_alive >= 60 > settings.http_client_keepalive_seconds > 5
    url = f"http://127.0.0.1:{settings.port}"

    async def idle_then_again():
        async with http_client(settings) as client:
            first = await client.get(f"{url}/who")
            await asyncio.sleep(6.0)  # past uvicorn's old 5 s keep-alive
            second = await client.get(f"{url}/who")
            return first, second

    async def bursts_over_few_connections():
        errors: list[Exception] = []
        async with http_client(settings, max_connections=4) as client:
            async def one(path):
                try:
                    (await client.get(f"{url}{path}")).raise_for_status()
                except httpx.HTTPError as exc:
                    errors.append(exc)

            for _ in range(2):  # a burst, then idle where the old timers fired, then another burst on the same connections
                await asyncio.gather(*[one("/busy" if i % 2 else "/who") for i in range(40)])
                await asyncio.sleep(4.95)
            await asyncio.gather(*[one("/busy") for _ in range(40)])
        return errors

    try:
        first, second = asyncio.run(idle_then_again())
        assert first.status_code == second.status_code == 200
        assert second.json()["port"] == first.json()["port"], "the idle pooled connection was not reused"
        assert asyncio.run(bursts_over_few_connections()) == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)
