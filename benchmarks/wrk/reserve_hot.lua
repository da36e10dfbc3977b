-- POST /v1/reservations, every request on the same pool.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"pool_id": "pool-hot"}'
