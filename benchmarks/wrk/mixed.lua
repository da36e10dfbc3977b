-- 10 availability : 2 reserve : 1 release. A release cancels a reservation made earlier on this thread.
math.randomseed(os.time())
local made = {}
local n = 0
request = function()
  n = n + 1
  local slot = n % 13
  if slot == 0 and #made > 0 then
    return wrk.format("DELETE", "/v1/reservations/" .. table.remove(made, 1), nil, nil)
  elseif slot == 1 or slot == 2 then
    return wrk.format("POST", "/v1/reservations", {["Content-Type"] = "application/json"},
      string.format('{"pool_id": "pool-%d"}', math.random(0, 499)))
  end
  return wrk.format("POST", "/v1/availability", {["Content-Type"] = "application/json"},
    string.format('{"zone": "zone-%d"}', math.random(0, 49)))
end
response = function(status, headers, body)
  -- only a reserve answer has both a reservation id and a quantity
  local id = string.match(body, '^{"reservation_id":"([^"]+)","pool_id":"[^"]*","quantity"')
  if status == 201 and id then table.insert(made, id) end
end
