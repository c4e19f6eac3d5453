-- wrk script for the mixed-load row: one connection per wrk thread (run with -tN -cN), so
-- that each thread's requests and responses strictly alternate and every request's latency
-- can be timed here and kept by kind. Every BENCH_BIG_EVERY-th request of a thread (0: none)
-- carries BENCH_BIG_BODY (many rows), the others BENCH_BODY (one row); threads start at
-- different offsets so the big requests do not arrive together. done() prints the one-row and
-- the big requests' percentiles separately.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local now_ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, now_ts) -- CLOCK_MONOTONIC
  return tonumber(now_ts.tv_sec) * 1e6 + tonumber(now_ts.tv_nsec) / 1e3
end

local content_type = os.getenv("BENCH_CONTENT_TYPE")
local every = tonumber(os.getenv("BENCH_BIG_EVERY") or "0")
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  small_body = os.getenv("BENCH_BODY")
  big_body = os.getenv("BENCH_BIG_BODY") or ""
  count = id -- offset: thread i sends its first big request after (every - i % every) small
  non2xx = 0
  small = {}
  big = {}
  started = 0
  is_big = false
end

function request()
  count = count + 1
  is_big = every > 0 and count % every == 0
  started = now_us()
  local headers = {["Content-Type"] = content_type}
  return wrk.format("POST", nil, headers, is_big and big_body or small_body)
end

function response(status, headers, body)
  local elapsed = now_us() - started
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if is_big then
    big[#big + 1] = elapsed
  else
    small[#small + 1] = elapsed
  end
end

local function percentiles(values)
  table.sort(values)
  local function at(p)
    if #values == 0 then return 0 end
    return values[math.max(1, math.ceil(#values * p / 100))]
  end
  return #values, at(50), at(99)
end

function done(summary, latency, requests)
  local bad, small_all, big_all = 0, {}, {}
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    for _, v in ipairs(thread:get("small")) do small_all[#small_all + 1] = v end
    for _, v in ipairs(thread:get("big")) do big_all[#big_all + 1] = v end
  end
  local e = summary.errors
  local n_small, small_p50, small_p99 = percentiles(small_all)
  local n_big, big_p50, big_p99 = percentiles(big_all)
  io.write(string.format(
    'BENCH_MIXED {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
      .. '"small": %d, "small_p50_us": %.1f, "small_p99_us": %.1f, '
      .. '"big": %d, "big_p50_us": %.1f, "big_p99_us": %.1f}\n',
    summary.requests, summary.duration, bad, e.connect + e.read + e.write + e.timeout,
    n_small, small_p50, small_p99, n_big, big_p50, big_p99))
end
