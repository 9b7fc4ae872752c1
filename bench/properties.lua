-- The seed's POST /v1/properties body, one distinct userId per request cycling over BENCH_USERS
-- users, plus "$increment": {"bench_hits": 1} so the run can prove every 200 was stored.
local users = tonumber(os.getenv("BENCH_USERS") or "100000")
local key = os.getenv("BENCH_KEY") or "none"
local path = os.getenv("BENCH_PATH") or "/v1/properties"
local spread = tonumber(os.getenv("BENCH_SPREAD") or "0")
local pad = os.getenv("BENCH_PAD") == "1"
local threads = {}
local counter = 0
local thread_id = 0
local thread_count = 1

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_count = tonumber(os.getenv("BENCH_THREADS") or "2")
  counter = 0
  math.randomseed(thread_id * 7919 + 17)
end

local headers = {["Content-Type"] = "application/json", ["X-HACKLE-API-KEY"] = key}

request = function()
  counter = counter + 1
  local n
  if spread > 0 then
    n = math.random(0, users - 1)
  else
    n = ((counter * thread_count) + thread_id) % users
  end
  local id = pad and string.format("%09d", n) or tostring(n)
  local body = '{"userId": "user-' .. id .. '", "deviceId": "device-' .. id .. '", "operations": {'
    .. '"$set": {"age": 42, "grade": "GOLD"}, "$setOnce": {"sign_up_date": "2020-01-01"}, '
    .. '"$unset": {"membership_type": "-"}, "$increment": {"bench_hits": 1}}}'
  return wrk.format("POST", path, headers, body)
end
