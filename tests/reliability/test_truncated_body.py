"""A body shorter than its Content-Length, followed by a half-close, is never applied."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from magpie.config import Settings
from tests.reliability._scenario import Tally, prepared_store, server_for, stored_users

ROUNDS = 50


async def _truncated(port: int, key: str, user_id: str) -> bytes:
    body = json.dumps({"userId": user_id, "operations": {"$set": {"a": 1}}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/properties HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-HACKLE-API-KEY: {key}\r\nContent-Length: {len(body) + 50}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.write_eof()  # half-close: the rest of the declared body never comes
    try:
        answer = await asyncio.wait_for(reader.read(4096), timeout=5)
    except (TimeoutError, ConnectionError):
        answer = b""
    writer.close()
    return answer


@pytest.mark.slow
def test_truncated_bodies_are_never_applied(settings: Settings) -> None:
    db, env = prepared_store(settings)
    with server_for(settings) as server:
        tally = Tally()

        async def run() -> list[bytes]:
            answers = []
            async with httpx.AsyncClient(timeout=10) as http:
                for n in range(ROUNDS):
                    answers.append(await _truncated(server.port, env.key, f"cut-{n}"))
                    user_id = f"whole-{n}"
                    response = await http.post(
                        server.url + "/v1/properties",
                        json={"userId": user_id, "operations": {"$set": {"a": 1}}},
                        headers={"X-HACKLE-API-KEY": env.key},
                    )
                    tally.record(user_id, response, 0.0)
            return answers

        answers = asyncio.run(run())
    applied = stored_users(db, env.id, [f"cut-{n}" for n in range(ROUNDS)])
    stored = stored_users(db, env.id, tally.acknowledged)
    tally.summary("truncated bodies", stored, truncated=ROUNDS, truncated_applied=applied)
    assert applied == 0
    assert not [a for a in answers if a.startswith(b"HTTP/1.1 2")]
    assert stored == len(tally.acknowledged) == ROUNDS and tally.server_errors == 0
