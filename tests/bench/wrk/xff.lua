-- xff.lua - wrk script for tests/bench/wrk.sh: every request carries
-- X-Forwarded-For with one of CLIENTS (default 100000) distinct client
-- addresses, picked at random, from the benchmarking range 198.18.0.0/15
-- (RFC 2544).  rategate with "trusted-proxies 1" takes the client from that
-- header, so the run looks like CLIENTS clients; the other set-ups get the
-- same header so that building and sending it costs the same everywhere.
--
-- At the end it prints one line for wrk.sh to parse:
--   RESULT requests=N seconds=S rps=R p50_us=X p99_us=Y non2xx=N errors=N

local clients = tonumber(os.getenv("CLIENTS") or "100000")
local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() * 1000 + (id or 0) * 7919)
end

request = function()
   local i = math.random(0, clients - 1)
   local addr = string.format("198.%d.%d.%d", 18 + math.floor(i / 65536),
                              math.floor(i / 256) % 256, i % 256)
   return wrk.format(nil, nil, { ["X-Forwarded-For"] = addr })
end

function done(summary, latency, requests)
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99), e.status,
      e.connect + e.read + e.write + e.timeout))
end
