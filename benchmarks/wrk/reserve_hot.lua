-- POST /v1/reservations, every request on the same pool.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.path = "/v1/reservations"
wrk.body = '{"pool_id": "pool-hot"}'
