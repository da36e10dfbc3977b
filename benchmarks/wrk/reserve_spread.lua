-- POST /v1/reservations on a random pool of 500.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  return wrk.format(nil, "/v1/reservations", nil, string.format('{"pool_id": "pool-%d"}', math.random(0, 499)))
end
