-- One wrk script for every endpoint, configured through the environment (bench/run.py sets it):
--   BENCH_TOKEN    the API token
--   BENCH_MODE     get | detail | pick | payment | create
--   BENCH_PATH     the path (get, create, payment); for pick, a format string with one %s (the
--                  value picked from the pool)
--   BENCH_POOL     a file of invoice ids, one a line (detail: picked at random; payment: cycled so
--                  that no two requests in flight pay the same invoice); for pick, any values
--                  (invoice ids, hosted-page tokens), picked at random
--   BENCH_BODY     the JSON body (create); for payment, a format string with one %s (the invoice id)
--   BENCH_THREADS  wrk's -t, to stride the payment pool between threads
--   BENCH_NONCE    makes Idempotency-Key values unique to this run
-- done() prints one line "BENCH_JSON {...}" with the counts and the latency percentiles (µs).

local token = os.getenv("BENCH_TOKEN")
local mode = os.getenv("BENCH_MODE") or "get"
local path = os.getenv("BENCH_PATH") or "/"
local pool_file = os.getenv("BENCH_POOL")
local body = os.getenv("BENCH_BODY") or ""
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local nonce = os.getenv("BENCH_NONCE") or "x"

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local pool = {}
local counter = 0
local fixed = nil
local headers = {}

function init(args)
  headers["Authorization"] = "Token " .. token
  if mode == "get" then
    fixed = wrk.format("GET", path, headers)
    return
  end
  if pool_file ~= nil and pool_file ~= "" then
    for line in io.lines(pool_file) do
      pool[#pool + 1] = line
    end
  end
  math.randomseed(os.time() + (tid or 0) * 7919)
  headers["Content-Type"] = "application/json"
end

function request()
  if fixed ~= nil then
    return fixed
  end
  if mode == "detail" then
    return wrk.format("GET", "/api/invoices/" .. pool[math.random(#pool)] .. "/", headers)
  end
  if mode == "pick" then
    return wrk.format("GET", string.format(path, pool[math.random(#pool)]), headers)
  end
  counter = counter + 1
  headers["Idempotency-Key"] = nonce .. "-" .. tid .. "-" .. counter
  if mode == "payment" then
    local id = pool[((tid + nthreads * counter) % #pool) + 1]
    return wrk.format("POST", path, headers, string.format(body, id))
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
