#!/usr/bin/python3
"""flask_limiter.py - what Flask-Limiter does per request, for bench_redis.

Flask-Limiter (python3-flask-limiter) decides a request by calling its
`limits` strategy's hit() once per limit that applies, in order, stopping at
the first that fails; with RedisStorage each hit is one script call
(EVALSHA).  This runs that loop directly on the `limits` library (no Flask,
no HTTP: the most favourable case for it) for SECONDS seconds against the
Redis at 127.0.0.1:PORT, NLIMITS limits per request, clients picked in turn
from CLIENTS, and prints one line:

    decisions=N seconds=S rate=R p99_us=P allowed=A

With HEADERS 1 it also does what Flask-Limiter 3.3 does per request when
its X-RateLimit headers are on (RATELIMIT_HEADERS_ENABLED, which is what
rategate's default `headers on` sends): get_window_stats() of the request's
"current limit" (the breached one, else the one with the shortest window),
which is a GET and a TTL for a fixed window and one more script call for a
moving window.

Kind "over" is one client over a fixed window of 1/minute (CLIENTS and
NLIMITS are ignored): a flood from one client, which Flask-Limiter asks
Redis about on every request.

Usage: flask_limiter.py PORT fixed|moving|over NLIMITS SECONDS CLIENTS [HEADERS]
"""
import sys
import time

from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

# The same limits bench_redis.c gives rategate, never reached.
LIMITS = {"fixed": ["1000000/minute", "10000000/hour", "100000000/day"],
          "moving": ["1000/minute", "2000/hour", "5000/day"],
          "over": ["1/minute"]}


def main():
    port, kind, nlimits, seconds, clients = (int(sys.argv[1]), sys.argv[2],
                                             int(sys.argv[3]),
                                             float(sys.argv[4]),
                                             int(sys.argv[5]))
    headers = len(sys.argv) > 6 and sys.argv[6] == "1"
    if kind == "over":
        clients = 1
    storage = RedisStorage("redis://127.0.0.1:%d/0" % port)
    strategy = (MovingWindowRateLimiter if kind == "moving"
                else FixedWindowRateLimiter)(storage)
    items = parse_many(";".join(LIMITS[kind][:nlimits]))
    shortest = min(items, key=lambda i: i.get_expiry())
    names = ["10.%d.%d.%d" % (c >> 16 & 255, c >> 8 & 255, c & 255)
             for c in range(clients)]
    lat = []
    allowed = 0
    n = 0
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        client = names[n % clients]
        t = time.perf_counter_ns()
        ok = True
        current = shortest
        for item in items:
            if not strategy.hit(item, "bench", client):
                ok = False
                current = item
                break
        if headers:
            strategy.get_window_stats(current, "bench", client)
        lat.append(time.perf_counter_ns() - t)
        allowed += ok
        n += 1
        now = time.perf_counter()
    lat.sort()
    p99 = lat[min(len(lat) - 1, len(lat) * 99 // 100)] / 1000.0
    took = now - start
    print("decisions=%d seconds=%.3f rate=%.0f p99_us=%.1f allowed=%d"
          % (n, took, n / took, p99, allowed))


if __name__ == "__main__":
    main()
