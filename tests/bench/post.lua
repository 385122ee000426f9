-- wrk script of the request-path benchmark: POSTs JSON and prints its figures as one
-- JSON line ("BENCH-RESULT {...}") for the driver to read.
--
-- BENCH_MODE "fixed":  every request sends BENCH_BODY (a static request: cheapest for wrk).
-- BENCH_MODE "create": every request sends a new lead (name and email unique per request).
-- BENCH_MODE "search": every request looks up lead<N>@example.com, N < BENCH_SEEDED, i.e.
--                      an email that exists.
-- BENCH_MODE "delivery": every request sends BENCH_BODY with a new X-Delivery header (a
--                      webhook delivery of its own, for idempotency keys).

local mode = os.getenv("BENCH_MODE") or "fixed"
local seeded = tonumber(os.getenv("BENCH_SEEDED") or "0")
local stamp = os.getenv("BENCH_STAMP") or "0"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY") or "{}"
-- BENCH_AUTH: a credential sent as "Authorization: Bearer ..." on every request.
if os.getenv("BENCH_AUTH") then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_AUTH")
end

-- BENCH_SIGNATURE: a Stripe-Signature header sent on every request.
if os.getenv("BENCH_SIGNATURE") then
  wrk.headers["Stripe-Signature"] = os.getenv("BENCH_SIGNATURE")
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() + 7919 * tid)
  sent = 0
end

if mode == "create" then
  request = function()
    sent = sent + 1
    local body = string.format(
      '{"name": "Lead %s-%d-%d", "email": "new-%s-%d-%d@example.com"}',
      stamp, tid, sent, stamp, tid, sent)
    return wrk.format(nil, nil, nil, body)
  end
elseif mode == "search" then
  request = function()
    local body = string.format('{"email": "lead%d@example.com"}', math.random(0, seeded - 1))
    return wrk.format(nil, nil, nil, body)
  end
end

if mode == "delivery" then
  request = function()
    sent = sent + 1
    wrk.headers["X-Delivery"] = string.format("%s-%d-%d", stamp, tid, sent)
    return wrk.format(nil, nil, nil, nil)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"status_errors": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
