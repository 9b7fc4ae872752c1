-- Hackle's trigger-send body with 50 users, each with apiProperties, distinct per request.
local key = os.getenv("BENCH_KEY") or "none"
local path = os.getenv("BENCH_PATH") or "/v1/push-message/trigger/send"
local thread_id = 0
local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local headers = {["Content-Type"] = "application/json", ["X-HACKLE-API-KEY"] = key}

request = function()
  counter = counter + 1
  local users = {}
  for i = 1, 50 do
    users[i] = '{"userId": "user-' .. thread_id .. '-' .. counter .. '-' .. i
      .. '", "apiProperties": {"productNumber": "' .. (counter * 50 + i) .. '", "rank": ' .. i .. '}}'
  end
  local body = '{"campaignKey": 1, "users": [' .. table.concat(users, ", ") .. ']}'
  return wrk.format("POST", path, headers, body)
end
