"""The baseline: a bare FastAPI endpoint doing the national server's primary-key
read on the same database, with the same driver and pool, and nothing else
(no token, no authorisation, no provision record)."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, HTTPException
from sqlalchemy import text

from services.common.db import make_engine


def build_app() -> FastAPI:
    engine = make_engine(os.environ["BENCH_DATABASE_URL"])
    app = FastAPI()

    @app.get("/persons/{resident_code}")
    async def person(resident_code: str) -> dict:
        async with engine.connect() as conn:
            row = (await conn.execute(text("select payload from identity where resident_code = :code"), {"code": resident_code})).first()
        if row is None:
            raise HTTPException(404)
        return json.loads(row[0])["identity"]

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_app(), host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), log_level="warning", access_log=False)
