-- POST one JSON body (file named by BENCH_BODY_FILE) with a fresh hookInstance per request,
-- then print the latency percentiles and counts as one JSON line prefixed "BENCH_RESULT ".
--
-- A fresh hookInstance keeps the decision log on its insert path (a repeated one is an upsert);
-- the body is split once around the hookInstance value so each request costs two concatenations.

local body_file = os.getenv("BENCH_BODY_FILE")
local placeholder = os.getenv("BENCH_HOOK_INSTANCE") or ""

local function read_body()
  local f = assert(io.open(body_file, "rb"), "cannot open BENCH_BODY_FILE " .. tostring(body_file))
  local text = f:read("*a")
  f:close()
  return text
end

local body = read_body()
local head, tail = body, nil
if placeholder ~= "" then
  local first, last = string.find(body, placeholder, 1, true)
  if first then
    head = string.sub(body, 1, first - 1)
    tail = string.sub(body, last + 1)
  end
end

local counter = 0
local threads_started = 0  -- counted in the setup state only

function setup(thread)
  threads_started = threads_started + 1
  -- Becomes the global thread_tag inside that thread's own Lua state.
  thread:set("thread_tag", threads_started)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json"
  if tail == nil then
    wrk.body = body
  end
end

function request()
  if tail == nil then
    return wrk.format()
  end
  counter = counter + 1
  -- A UUID version 4 shape: thread tag and counter make it unique within the run.
  local id = string.format("%08x-0000-4000-8000-%012x", thread_tag or 0, counter)
  return wrk.format(nil, nil, nil, head .. id .. tail)
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)
  )
  io.write("BENCH_RESULT " .. out .. "\n")
end
