-- POST /v1/availability for a random zone of 50.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  return wrk.format(nil, "/v1/availability", nil, string.format('{"zone": "zone-%d"}', math.random(0, 49)))
end
