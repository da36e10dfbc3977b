-- POST /v1/reservations with choose: one unit of any pool of the zone the script is given
-- (wrk ... -- ZONE), the earliest slot first.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.path = "/v1/reservations"
init = function(args)
  wrk.body = string.format('{"choose": {"zone": "%s", "quantity": 1, "prefer": "earliest"}}', args[1])
end
