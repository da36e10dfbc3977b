"""Stateless FastAPI + asyncpg + PostgreSQL, the same HTTP contract's hot paths.

YARDSTICK_DSN=postgresql://... uvicorn benchmarks.yardstick.app:app --workers 2
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    pool_id text PRIMARY KEY, zone text NOT NULL, slot_start timestamptz, slot_end timestamptz,
    capacity int NOT NULL, reserved int NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS pools_zone ON pools (zone);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id text PRIMARY KEY, pool_id text NOT NULL, quantity int NOT NULL, status text NOT NULL);
"""

pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    # The schema is created by whoever starts the workers (two workers creating it at once race).
    pool = await asyncpg.create_pool(os.environ["YARDSTICK_DSN"], min_size=4, max_size=16)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


class AvailabilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zone: str
    slot_from: datetime | None = None
    slot_to: datetime | None = None
    quantity: int = 1


class ReserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool_id: str
    quantity: int = 1


def error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": code}}, status_code=status)


@app.post("/v1/availability")
async def availability(body: AvailabilityRequest) -> dict[str, object]:
    assert pool is not None
    rows = await pool.fetch(
        "SELECT pool_id, zone, slot_start, slot_end, capacity - reserved AS remaining FROM pools "
        "WHERE zone = $1 AND capacity - reserved >= $2 "
        "AND ($3::timestamptz IS NULL OR slot_end IS NULL OR slot_end > $3) "
        "AND ($4::timestamptz IS NULL OR slot_start IS NULL OR slot_start < $4) ORDER BY slot_start, pool_id",
        body.zone,
        body.quantity,
        body.slot_from,
        body.slot_to,
    )
    return {"pools": [dict(r) for r in rows]}


@app.post("/v1/reservations", status_code=201, response_model=None)
async def reserve(body: ReserveRequest) -> dict[str, object] | JSONResponse:
    assert pool is not None
    reservation_id = f"{body.pool_id}.{secrets.token_urlsafe(16)}"
    row = await pool.fetchrow(
        "WITH taken AS (UPDATE pools SET reserved = reserved + $2 WHERE pool_id = $1 AND reserved + $2 <= capacity "
        "RETURNING pool_id, capacity - reserved AS remaining) "
        "INSERT INTO reservations SELECT $3, pool_id, $2, 'active' FROM taken RETURNING "
        "(SELECT remaining FROM taken) AS remaining",
        body.pool_id,
        body.quantity,
        reservation_id,
    )
    if row is None:
        return error(409, "insufficient_capacity")
    return {
        "reservation_id": reservation_id,
        "pool_id": body.pool_id,
        "quantity": body.quantity,
        "remaining": row["remaining"],
    }


@app.delete("/v1/reservations/{reservation_id}", response_model=None)
async def release(reservation_id: str) -> dict[str, object] | JSONResponse:
    assert pool is not None
    row = await pool.fetchrow(
        "WITH gone AS (UPDATE reservations SET status = 'released' WHERE reservation_id = $1 AND status = 'active' "
        "RETURNING pool_id, quantity) "
        "UPDATE pools SET reserved = pools.reserved - gone.quantity FROM gone WHERE pools.pool_id = gone.pool_id "
        "RETURNING pools.pool_id",
        reservation_id,
    )
    if row is None:
        exists = await pool.fetchval("SELECT pool_id FROM reservations WHERE reservation_id = $1", reservation_id)
        if exists is None:
            return error(404, "reservation_not_found")
        return {"reservation_id": reservation_id, "pool_id": exists, "status": "released"}
    return {"reservation_id": reservation_id, "pool_id": row["pool_id"], "status": "released"}
