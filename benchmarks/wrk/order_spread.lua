-- POST /v1/orders: two lines of one unit each, on two distinct random pools of 500, no hold.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  local first = math.random(0, 499)
  local second = math.random(0, 498)
  if second >= first then
    second = second + 1
  end
  return wrk.format(nil, "/v1/orders", nil, string.format(
    '{"lines": [{"pool_id": "pool-%d", "quantity": 1}, {"pool_id": "pool-%d", "quantity": 1}]}', first, second))
end
