-- store_redis.lua - rategate's strategies and in-flight counters as one
-- Redis script, so that every decision is atomic on the server and takes one
-- round trip (gateway/store_redis.c sends it with EVALSHA).
--
-- This is a port of rules/strategy.c and of the batch logic of
-- rules/memstore.c; the results are the same to the millisecond (the
-- engine's strategy vectors run against it).  Read those first: the
-- comments here only say what differs.
--
-- Calls (ARGV[1] names the operation; KEYS are the counter keys):
--   apply   MODE NOW {STRATEGY COUNT PERIOD BURST COST PROBE} x #KEYS
--           MODE 0 = test, 1 = hit.  Returns 5 values per key: allowed,
--           never, remaining, reset_ms, retry_ms; then the call's time
--           (Redis TIME, the clock of reset_ms), for the gateway to say
--           a reset on its own clock.
--   acquire NOW MAX LEASE_MS ID    one in-flight lease on KEYS[1];
--           returns {acquired 0|1, held}
--   release NOW ID                 returns {released 0|1, held}
-- NOW < 0 means "ask the server": Redis TIME, so that gateways whose clocks
-- disagree agree on windows (Redis 7 replicates a script's effects, so TIME
-- is allowed before writes).  NOW >= 0 is the caller's clock (tests).
--
-- Numbers.  Lua 5.1 numbers are doubles, exact below 2^53; times in ms and
-- counts are far below that, but count x period reaches 3.1e21 and the GCRA
-- level holds as much.  A "wide" value is a plain number while below 2^53
-- and otherwise a table of four 24-bit limbs, little-endian (below 2^96);
-- the helpers below promote and demote as needed, so the common small
-- limits never leave plain arithmetic.  A value is returned to the client
-- as an integer, or as a decimal string when it does not fit 2^53.
--
-- State per key (a Redis string; every key written gets a TTL: the time at
-- which its state is equivalent to a fresh one, rl_strategy_expiry):
--   fixed-window, elastic, sliding, gcra:  "STRATEGY COUNT w0 w1 [w2]" in
--     decimal, the words of rules/strategy.c (the GCRA level as one
--     decimal number instead of two 64-bit halves).
--   moving-window: binary, "RGMOVE1:" then count, n, head and the ring of
--     hit times as big-endian doubles (8 bytes each), read and written with
--     GETRANGE/SETRANGE so that a check costs O(log n) and a hit O(cost).
--   in-flight: a sorted set, member the lease id, score its expiry.
-- A key holding another strategy or count reads as fresh, as in memstore.

-- Speed.  Redis runs this whole chunk on every EVALSHA, so every function
-- defined at the top level is made again on every call.  A batch on
-- distinct keys whose numbers are plain and whose moving-window rings
-- hold up to 8188 hits (nearly every batch) is decided first, by the
-- straight-line "plain path", which returns before anything else is made;
-- for the rest (the "general path"), the wide integers, the moving
-- window, the sliding counter and GCRA are made on first use in a call.
-- tests/unit/test_store_redis.c runs the strategy vectors through both
-- paths, and tests/bench/redis_script_cost.sh counts what a call costs
-- Redis.

local fmod, floor, format, match = math.fmod, math.floor, string.format,
	string.match

-- Shared by the plain and the general path.
local TWO53 = 9007199254740992
-- On the caller's clock (tests only) times are virtual, but Redis expires
-- keys on its own clock: a TTL there is at least this long, so that a key
-- never expires between two steps of a virtual timeline.  Keeping a state
-- past its expiry is harmless (it reads as fresh then).
local VIRTUAL_TTL_MIN = 3600000
-- Moving-window rings: "RGMOVE1:", count, n, head (big-endian doubles),
-- then the hit times; rings up to SLURP_MAX bytes are read whole.
local MAGIC, HDR, SLURP_MAX = 'RGMOVE1:', 32, 65536

-- ------------------------------------------------------------------
-- The plain path

-- The time of a call: NOW (arg) in ms, or Redis TIME when NOW < 0; and
-- whether it was the caller's (virtual).
local function time_of(arg)
	local now = tonumber(arg)
	if now >= 0 then
		return now, true
	end
	local tm = redis.call('TIME')
	return tonumber(tm[1]) * 1000 + floor(tonumber(tm[2]) / 1000), false
end

if ARGV[1] == 'apply' then
	local n = #KEYS
	-- The plain path: a batch of ops of any strategy on distinct keys.
	-- It is the views and verdicts of the five strategies and the batch
	-- logic of apply() below, inlined: check every op (a GET each), then,
	-- when all are allowed, consume and write each (a SET, or SETRANGEs
	-- for a ring), or when one is denied, move the elastic windows.  An
	-- op whose capacity or stored words could leave 2^53, a ring of more
	-- than 8188 hits or of another layout, or a key given twice sends the
	-- whole batch, unwritten, to the general path.  The answers are the
	-- general path's to the digit.
	--
	-- Redis CPU (tests/bench/redis_script_cost.sh): a tonumber() or a new
	-- table costs about as much as 30 plain Lua operations, and each
	-- redis.call() as much as 150, so each ARGV number is read once (a
	-- cost of '1' not at all), one table carries everything, and a hit
	-- that leaves a window's end where it was writes with KEEPTTL, which
	-- Redis does for less than a new PX.
	local plain = true
	if n > 1 then
		local seen = {}
		for i = 1, n do
			if seen[KEYS[i]] then
				plain = false
				break
			end
			seen[KEYS[i]] = true
		end
	end
	if plain then
		local now, virtual = time_of(ARGV[3])
		local tnow = now < 0 and 0 or now
		-- floor(a / b) and ceil(a / b), exact for a < 2^53
		local function fdiv(a, b)
			return (a - fmod(a, b)) / b
		end
		local function cdiv(a, b)
			local r = fmod(a, b)
			return (a - r) / b + (r ~= 0 and 1 or 0)
		end
		-- res: the 5 answers per op, then 10 numbers per op from the
		-- check to the write (count, period, cost, capacity, effective
		-- time, four state words as the check left them, whether the
		-- write keeps the TTL).  One table, not ten: making a table
		-- costs Redis as much as a tonumber().  Redis turns a Lua table
		-- into a reply up to its first nil, so res[5n + 1] = nil below
		-- cuts the numbers off the answer.
		local res = n == 1 and
			{ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 } or {}
		local all = true
		for i = 1, n do
			local a = 3 + 6 * (i - 1)
			local st, cs = ARGV[a + 1], ARGV[a + 2]
			local count, P = tonumber(cs), tonumber(ARGV[a + 3])
			local cost = ARGV[a + 5]
			cost = cost == '1' and 1 or tonumber(cost)
			local cap = 0
			if st == '4' then
				local burst = ARGV[a + 4]
				cap = (burst ~= '0' and tonumber(burst) or count) * P
			elseif st == '3' then
				cap = count * P
			end
			if (cap + 2 * P) * 4 >= TWO53 then
				plain = false
				break
			end
			local w0, w1, w2
			local s = redis.call('GET', KEYS[i])
			if st == '2' then
				if HDR + 8 * count > SLURP_MAX then
					plain = false   -- a ring read in pieces
					break
				end
			elseif s then
				local x, c
				x, c, w0, w1, w2 = match(s, '^(%d+) (%d+) (%d+) (%d+) ?(%d*)$')
				if x ~= st or c ~= cs or (st == '3') ~= (w2 ~= '') then
					w0 = nil        -- another layout: fresh
				elseif #w0 > 15 or #w1 > 15 or #w2 > 15 then
					plain = false   -- too large: the general path
					break
				end
			end
			local r = 5 * (i - 1)
			local t = tnow
			local v1, v2, v5 = 0, 0, 0
			local x, y, z, w, keep = 0, 0, 0, 0, false
			if st == '0' or st == '1' then
				-- fixed [window_start, used], elastic [window_end, used]
				local x0 = w0 and tonumber(w0) or 0
				local used = w0 and tonumber(w1) or 0
				local wend
				if st == '0' then
					if used ~= 0 and t < x0 then
						t = x0
					end
					if used ~= 0 and t - x0 < P then
						wend = x0 + P
						keep = not virtual
					else
						used, wend = 0, t + P
					end
				else
					local last = 0
					if used ~= 0 and x0 >= P then
						last = x0 - P
					end
					if t < last then
						t = last
					end
					if used ~= 0 and t < x0 then
						wend = x0
					else
						used, wend = 0, t + P
					end
				end
				res[r + 3] = used < count and count - used or 0
				res[r + 4] = wend
				if cost > count then
					v2, v5 = 1, P
				elseif used + cost <= count then
					v1 = 1
				else
					local retry = wend - t
					v5 = retry < 1 and 1 or retry
				end
				x, y = wend, used
			elseif st == '4' then
				-- gcra [t_last, level]
				local t0 = w0 and tonumber(w0) or 0
				local level = w0 and tonumber(w1) or 0
				if t < t0 then
					t = t0
				end
				local drained = (t - t0) * count
				level = level > drained and level - drained or 0
				local hit = cost * P
				res[r + 3] = level >= cap and 0 or fdiv(cap - level, P)
				res[r + 4] = t + cdiv(level, count)
				if hit > cap then
					v2, v5 = 1, P
				elseif level + hit <= cap then
					v1 = 1
				else
					local retry = cdiv(level + hit - cap, count)
					v5 = retry < 1 and 1 or retry
				end
				y = level
			elseif st == '2' then
				-- moving window: "RGMOVE1:", count, n, head, then the ring
				-- of hit times (make_moving below); a ring of another
				-- layout goes to the general path, which starts it over
				local nr, head = 0, 0
				if s then
					local c
					if #s < HDR or string.sub(s, 1, 8) ~= MAGIC then
						plain = false
						break
					end
					c, nr, head = struct.unpack('>d>d>d', s, 9)
					if c ~= count or nr > count or
					   (nr ~= 0 and head >= count) then
						plain = false
						break
					end
				end
				-- the i-th oldest hit time (0-based)
				local function at(j)
					local k = head + j
					if k >= count then
						k = k - count
					end
					local off = HDR + 8 * k
					if not s or #s < off + 8 then
						return 0
					end
					return (struct.unpack('>d', s, off + 1))
				end
				local last = nr > 0 and at(nr - 1) or 0
				if t < last then
					t = last
				end
				local lo, hi = 0, nr
				while lo < hi do
					local mid = floor((lo + hi) / 2)
					if t - at(mid) >= P then
						lo = mid + 1
					else
						hi = mid
					end
				end
				local live = nr - lo
				res[r + 3] = count - live
				res[r + 4] = live > 0 and last + P or t
				if cost > count then
					v2, v5 = 1, P
				elseif live + cost <= count then
					v1 = 1
				else
					local retry = at(lo + (live + cost - count) - 1) + P - t
					v5 = retry < 1 and 1 or retry
				end
				x, y, z, w = head, lo, live, last
			else
				-- sliding-window-counter [cur_start, prev, cur]
				local start0 = w0 and tonumber(w0) or 0
				local prev = w0 and tonumber(w1) or 0
				local cur = w0 and tonumber(w2) or 0
				if t < start0 then
					t = start0
				end
				if t - start0 >= 2 * P then
					prev, cur = 0, 0
				elseif t - start0 >= P then
					prev, cur = cur, 0
				elseif cur ~= 0 then
					keep = not virtual      -- expiry start + 2P stays
				end
				if (prev + cur + cost) * P >= TWO53 then
					plain = false
					break
				end
				local start = t - fmod(t, P)
				local e = t - start
				local used = prev * (P - e) + cur * P
				res[r + 3] = used >= cap and 0 or fdiv(cap - used, P)
				res[r + 4] = cur ~= 0 and start + 2 * P or
					     (prev ~= 0 and start + P or t)
				if cost > count then
					v2, v5 = 1, P
				elseif used + cost * P <= cap then
					v1 = 1
				else
					-- the first time at which need hits fit, on a
					-- window whose previous count is pv
					local function first_fit(pv, need)
						if need > count then
							return P
						end
						if pv == 0 then
							return 0
						end
						local q = fdiv((count - need) * P, pv)
						return q >= P and 0 or P - q
					end
					local need = cur + cost
					if need > count then
						need = count + 1
					end
					local e1 = first_fit(prev, need)
					local at
					if e1 < e then
						e1 = e
					end
					if e1 < P then
						at = start + e1
					else
						e1 = first_fit(cur, cost)
						at = e1 < P and start + P + e1 or start + 2 * P
					end
					local retry = at - t
					v5 = retry < 1 and 1 or retry
				end
				x, y, z = start, prev, cur
			end
			res[r + 1], res[r + 2], res[r + 5] = v1, v2, v5
			all = all and v1 == 1
			local o = 5 * n + 10 * (i - 1)
			res[o + 1], res[o + 2], res[o + 3], res[o + 4], res[o + 5] =
				count, P, cost, cap, t
			res[o + 6], res[o + 7], res[o + 8], res[o + 9], res[o + 10] =
				x, y, z, w, keep
		end
		if plain then
			if ARGV[2] == '1' then
				for i = 1, n do
					local a = 3 + 6 * (i - 1)
					local st = ARGV[a + 1]
					local o = 5 * n + 10 * (i - 1)
					local count, P, cost, cap, t = res[o + 1], res[o + 2],
						res[o + 3], res[o + 4], res[o + 5]
					local x, y, z, w = res[o + 6], res[o + 7], res[o + 8],
						res[o + 9]
					local r = 5 * (i - 1)
					-- what to write: a text state, or the new hits of
					-- a ring (c of them at slot k, run before the wrap,
					-- the live ones moved to h2); and until when
					local state, expiry, c, h2, k, run
					if not all then
						-- denied: nothing is consumed; the elastic
						-- windows move (penalize)
						if st == '1' and ARGV[a + 6] ~= '1' then
							res[r + 4] = t + P
							if res[r + 1] == 0 then
								res[r + 5] = P
							end
							if y ~= 0 then
								expiry = t + P
								state = format('1 %s %d %d', ARGV[a + 2],
									       expiry, y)
							end
						end
					elseif ARGV[a + 6] ~= '1' then
						if st == '0' or st == '1' then
							local used = y + cost
							res[r + 3] = used < count and count - used or 0
							if st == '0' then
								state = format('0 %s %d %d', ARGV[a + 2],
									       x - P, used)
								expiry = used ~= 0 and x or 0
							else
								res[r + 4] = t + P
								state = format('1 %s %d %d', ARGV[a + 2],
									       t + P, used)
								expiry = used ~= 0 and t + P or 0
							end
						elseif st == '4' then
							local level = y + cost * P
							res[r + 3] = level >= cap and 0 or
								     fdiv(cap - level, P)
							res[r + 4] = t + cdiv(level, count)
							expiry = level == 0 and 0 or res[r + 4]
							state = format('4 %s %d %d', ARGV[a + 2], t,
								       level)
						elseif st == '2' then
							-- the live hits move to the front (h2) and
							-- the new ones follow, wrapping at count
							local head, lo, live, last = x, y, z, w
							h2 = live > 0 and fmod(head + lo, count) or 0
							c = cost
							if c > count - live then
								c = count - live
							end
							k = h2 + live
							if k >= count then
								k = k - count
							end
							run = c
							if run > count - k then
								run = count - k
							end
							res[r + 3], res[r + 4] = count - (live + c), t + P
							-- until the newest hit leaves the window
							expiry = live + c == 0 and 0 or
								 (c > 0 and t or last) + P
						else
							local start, prev, cur = x, y, z + cost
							local used = prev * (P - (t - start)) + cur * P
							res[r + 3] = used >= cap and 0 or
								     fdiv(cap - used, P)
							res[r + 4] = cur ~= 0 and start + 2 * P or
								     (prev ~= 0 and start + P or t)
							expiry = cur ~= 0 and start + 2 * P or
								 (prev ~= 0 and start + P or 0)
							state = format('3 %s %d %d %d', ARGV[a + 2],
								       start, prev, cur)
						end
					end
					if expiry then
						-- (a write that keeps the TTL keeps a window end
						-- still ahead: its ttl is > 0)
						local ttl = expiry - now
						if virtual and ttl > 0 and ttl < VIRTUAL_TTL_MIN then
							ttl = VIRTUAL_TTL_MIN
						end
						if ttl <= 0 then
							redis.call('DEL', KEYS[i])
						elseif c then
							redis.call('SETRANGE', KEYS[i], 0, MAGIC ..
								   struct.pack('>d>d>d', count,
									       z + c, h2))
							local slot = struct.pack('>d', t)
							if run > 0 then
								redis.call('SETRANGE', KEYS[i], HDR + 8 * k,
									   string.rep(slot, run))
							end
							if c - run > 0 then
								redis.call('SETRANGE', KEYS[i], HDR,
									   string.rep(slot, c - run))
							end
							redis.call('PEXPIRE', KEYS[i], ttl)
						elseif res[o + 10] then
							redis.call('SET', KEYS[i], state, 'KEEPTTL')
						else
							redis.call('SET', KEYS[i], state, 'PX', ttl)
						end
					end
				end
			end
			res[5 * n + 1] = now
			res[5 * n + 2] = nil
			return res
		end
	end
end

local virtual = false           -- NOW came from the caller (tests)

-- ------------------------------------------------------------------
-- Wide unsigned integers (made on first use)

local function make_wide()
	local LIMB = 16777216                 -- 2^24
	local w = {}

	local function big(x)
		if type(x) == 'table' then
			return x
		end
		local l0 = fmod(x, LIMB); x = (x - l0) / LIMB
		local l1 = fmod(x, LIMB); x = (x - l1) / LIMB
		local l2 = fmod(x, LIMB); x = (x - l2) / LIMB
		return { l0, l1, l2, x }
	end

	-- A number when it fits 2^53 exactly (the top limbs leave 5 bits).
	local function norm(t)
		if t[4] == 0 and t[3] < 32 then
			return t[1] + t[2] * LIMB + t[3] * LIMB * LIMB
		end
		return t
	end

	function w.add(a, b)
		if type(a) == 'number' and type(b) == 'number' then
			local r = a + b
			if r < TWO53 then
				return r
			end
		end
		a, b = big(a), big(b)
		local r, carry = {}, 0
		for i = 1, 4 do
			local s = a[i] + b[i] + carry
			r[i] = fmod(s, LIMB)
			carry = (s - r[i]) / LIMB
		end
		if carry ~= 0 then
			error('rategate: wide integer overflow')
		end
		return norm(r)
	end

	-- a - b, a >= b.
	function w.sub(a, b)
		if type(a) == 'number' and type(b) == 'number' then
			return a - b
		end
		a, b = big(a), big(b)
		local r, borrow = {}, 0
		for i = 1, 4 do
			local s = a[i] - b[i] - borrow
			if s < 0 then
				s = s + LIMB
				borrow = 1
			else
				borrow = 0
			end
			r[i] = s
		end
		return norm(r)
	end

	function w.cmp(a, b)
		if type(a) == 'number' and type(b) == 'number' then
			if a < b then return -1 elseif a > b then return 1 end
			return 0
		end
		a, b = big(a), big(b)
		for i = 4, 1, -1 do
			if a[i] < b[i] then return -1 elseif a[i] > b[i] then return 1 end
		end
		return 0
	end

	function w.mul(a, b)
		if type(a) == 'number' and type(b) == 'number' then
			local r = a * b
			if r < TWO53 then
				return r
			end
		end
		a, b = big(a), big(b)
		local r = { 0, 0, 0, 0, 0, 0, 0, 0 }
		for i = 1, 4 do
			if a[i] ~= 0 then
				for j = 1, 4 do
					r[i + j - 1] = r[i + j - 1] + a[i] * b[j]
				end
			end
		end
		local carry = 0
		for k = 1, 8 do
			local s = r[k] + carry
			r[k] = fmod(s, LIMB)
			carry = (s - r[k]) / LIMB
		end
		if carry ~= 0 or r[5] ~= 0 or r[6] ~= 0 or r[7] ~= 0 or r[8] ~= 0 then
			error('rategate: wide integer overflow')
		end
		return norm({ r[1], r[2], r[3], r[4] })
	end

	-- Quotient and remainder of a by a plain number d, 1 <= d < 2^45
	-- (every divisor here is a period, a count or a count-sized state
	-- word), byte by byte so that remainder * 256 + byte stays below 2^53.
	function w.divmod(a, d)
		if d >= 35184372088832 then
			error('rategate: divisor out of range')
		end
		if type(a) == 'number' then
			local r = fmod(a, d)
			return (a - r) / d, r
		end
		local q, r = {}, 0
		for i = 4, 1, -1 do
			local limb, ql = a[i], 0
			local bytes = { floor(limb / 65536), fmod(floor(limb / 256), 256),
					fmod(limb, 256) }
			for k = 1, 3 do
				local x = r * 256 + bytes[k]
				r = fmod(x, d)
				ql = ql * 256 + (x - r) / d
			end
			q[i] = ql
		end
		return norm(q), r
	end

	function w.div(a, d)
		local q = w.divmod(a, d)
		return q
	end

	function w.ceil_div(a, d)
		local q, r = w.divmod(a, d)
		if r ~= 0 then
			q = w.add(q, 1)
		end
		return q
	end

	function w.todec(a)
		local parts = {}
		while type(a) ~= 'number' do
			local r
			a, r = w.divmod(a, 1000000)
			table.insert(parts, 1, format('%06d', r))
		end
		return format('%d', a) .. table.concat(parts)
	end

	function w.fromdec(s)
		local head = #s % 6
		local v = 0
		if head > 0 then
			v = tonumber(string.sub(s, 1, head))
		end
		for i = head + 1, #s, 6 do
			v = w.add(w.mul(v, 1000000), tonumber(string.sub(s, i, i + 5)))
		end
		return v
	end

	return w
end

local W
local function wide()
	if W == nil then
		W = make_wide()
	end
	return W
end

local function todec(a)
	if type(a) == 'number' then
		return format('%d', a)
	end
	return wide().todec(a)
end

local function fromdec(s)
	if #s <= 15 then
		return tonumber(s)
	end
	return wide().fromdec(s)
end

-- ------------------------------------------------------------------
-- Verdicts: { allowed, never, remaining, reset, retry }

local function deny_never(p, v)
	v[1], v[2], v[5] = 0, 1, p.period
end

local function allow(v)
	v[1], v[2], v[5] = 1, 0, 0
end

-- retry: a plain number here; sliding and GCRA have their own.
local function deny(v, retry)
	v[1], v[2] = 0, 0
	v[5] = retry < 1 and 1 or retry
end

local function effective_now(now, stored)
	if now < 0 then
		now = 0
	end
	return now < stored and stored or now
end

-- ------------------------------------------------------------------
-- fixed-window [window_start_ms, used] and elastic [window_end_ms, used]
-- (every value here is far below 2^53: plain numbers)

local function window_verdict(p, t, used, wend, v)
	v[3] = used < p.count and p.count - used or 0
	v[4] = wend
	if p.cost > p.count then
		deny_never(p, v)
	elseif used + p.cost <= p.count then
		allow(v)
	else
		deny(v, wend - t)
	end
end

local function fixed_view(p, st, now)
	local t = effective_now(now, st[2] ~= 0 and st[1] or 0)
	if st[2] ~= 0 and t - st[1] < p.period then
		return t, st[2], st[1] + p.period
	end
	return t, 0, t + p.period
end

local function elastic_view(p, st, now)
	local last = 0
	if st[2] ~= 0 and st[1] >= p.period then
		last = st[1] - p.period
	end
	local t = effective_now(now, last)
	if st[2] ~= 0 and t < st[1] then
		return t, st[2], st[1]
	end
	return t, 0, t + p.period
end

-- ------------------------------------------------------------------
-- sliding-window-counter [cur_start_ms, prev, cur] (made on first use)

local function make_sliding(w)
	local add, sub, mul, cmp, div = w.add, w.sub, w.mul, w.cmp, w.div
	local m = {}

	local function roll(p, st, now)
		local P = p.period
		local s = { t = effective_now(now, st[1]), prev = st[2], cur = st[3] }
		if s.t - st[1] >= 2 * P then
			s.prev, s.cur = 0, 0
		elseif s.t - st[1] >= P then
			s.prev, s.cur = s.cur, 0
		end
		s.start = s.t - fmod(s.t, P)
		s.e = s.t - s.start
		return s
	end

	local function remaining(p, s)
		local P = p.period
		local cap = mul(p.count, P)
		local used = add(mul(s.prev, P - s.e), mul(s.cur, P))
		if cmp(used, cap) >= 0 then
			return 0
		end
		return div(sub(cap, used), P)
	end

	local function reset(p, s)
		if s.cur ~= 0 then
			return s.start + 2 * p.period
		end
		if s.prev ~= 0 then
			return s.start + p.period
		end
		return s.t
	end

	local function first_fit(p, prev, need)
		local P = p.period
		if need > p.count then
			return P
		end
		if prev == 0 then
			return 0
		end
		local q = div(mul(p.count - need, P), prev)
		if cmp(q, P) >= 0 then
			return 0
		end
		return P - q
	end

	function m.check(p, st, now, v)
		local P = p.period
		local s = roll(p, st, now)
		v[3] = remaining(p, s)
		v[4] = reset(p, s)
		if p.cost > p.count then
			deny_never(p, v)
		elseif cmp(add(mul(s.prev, P - s.e), mul(s.cur + p.cost, P)),
			   mul(p.count, P)) <= 0 then
			allow(v)
		else
			local need = s.cur + p.cost
			if need > p.count then
				need = p.count + 1
			end
			local e1 = first_fit(p, s.prev, need)
			local at
			if e1 < s.e then
				e1 = s.e
			end
			if e1 < P then
				at = s.start + e1
			else
				e1 = first_fit(p, s.cur, p.cost)
				if e1 < P then
					at = s.start + P + e1
				else
					at = s.start + 2 * P
				end
			end
			deny(v, at - s.t)
		end
	end

	function m.consume(p, st, now, v)
		local s = roll(p, st, now)
		s.cur = s.cur + p.cost
		st[1], st[2], st[3] = s.start, s.prev, s.cur
		v[3] = remaining(p, s)
		v[4] = reset(p, s)
		allow(v)
	end

	function m.expiry(p, st)
		if st[3] ~= 0 then
			return st[1] + 2 * p.period
		end
		return st[2] ~= 0 and st[1] + p.period or 0
	end

	return m
end

-- ------------------------------------------------------------------
-- gcra [t_last_ms, level] (made on first use)

local function make_gcra(w)
	local add, sub, mul, cmp, div, ceil_div = w.add, w.sub, w.mul, w.cmp,
		w.div, w.ceil_div
	local m = {}

	local function view(p, st, now)
		local g = { t = effective_now(now, st[1]) }
		local drained = mul(g.t - st[1], p.count)
		g.level = cmp(st[2], drained) > 0 and sub(st[2], drained) or 0
		g.cap = mul(p.burst ~= 0 and p.burst or p.count, p.period)
		g.hit = mul(p.cost, p.period)
		return g
	end

	local function fill(p, g, v)
		if cmp(g.level, g.cap) >= 0 then
			v[3] = 0
		else
			v[3] = div(sub(g.cap, g.level), p.period)
		end
		v[4] = add(g.t, ceil_div(g.level, p.count))
	end

	function m.check(p, st, now, v)
		local g = view(p, st, now)
		fill(p, g, v)
		if cmp(g.hit, g.cap) > 0 then
			deny_never(p, v)
		elseif cmp(add(g.level, g.hit), g.cap) <= 0 then
			allow(v)
		else
			local retry = ceil_div(sub(add(g.level, g.hit), g.cap), p.count)
			v[1], v[2] = 0, 0
			v[5] = cmp(retry, 1) < 0 and 1 or retry
		end
	end

	function m.consume(p, st, now, v)
		local g = view(p, st, now)
		g.level = add(g.level, g.hit)
		st[1], st[2] = g.t, g.level
		fill(p, g, v)
		allow(v)
	end

	function m.expiry(p, st)
		if cmp(st[2], 0) == 0 then
			return 0
		end
		return add(st[1], ceil_div(st[2], p.count))
	end

	return m
end

-- ------------------------------------------------------------------
-- moving-window: a ring of hit times in a binary string (made on first
-- use)
--
-- The ring object: n, head, cap (the count), the key, and runs of slots
-- written by this call ({first slot, length, time}, newest last) that
-- overlay what the key holds until they are written back.

local function make_moving()
	local m = {}

	function m.load(key, count)
		local r = { key = key, cap = count, n = 0, head = 0, runs = {},
			    reset = false }
		local h
		if HDR + 8 * count <= SLURP_MAX then
			-- a small ring is read whole, in one call: every slot
			-- is then a string.sub away
			h = redis.call('GET', key)
			if h then
				r.data = h
			else
				h = ''
			end
		else
			h = redis.call('GETRANGE', key, 0, HDR - 1)
			r.memo = {}
		end
		if #h == 0 then
			return r
		end
		if #h < HDR or string.sub(h, 1, 8) ~= MAGIC then
			r.reset = true          -- another layout: start over
			return r
		end
		local c, n, head = struct.unpack('>d>d>d', h, 9)
		if c ~= count then
			r.reset = true
			return r
		end
		if n > count or (n ~= 0 and head >= count) then
			n, head = 0, 0
		end
		r.n, r.head = n, head
		return r
	end

	local function slot(r, k)
		for i = #r.runs, 1, -1 do
			local run = r.runs[i]
			if k >= run[1] and k < run[1] + run[2] then
				return run[3]
			end
		end
		if r.reset then
			return 0
		end
		local off = HDR + 8 * k
		local d = r.data
		if d then
			if #d < off + 8 then
				return 0
			end
			return (struct.unpack('>d', d, off + 1))
		end
		-- a large ring: one GETRANGE per slot, each read once (check
		-- and consume search the same slots)
		local t = r.memo[k]
		if t == nil then
			local b = redis.call('GETRANGE', r.key, off, off + 7)
			t = #b < 8 and 0 or (struct.unpack('>d', b))
			r.memo[k] = t
		end
		return t
	end

	local function at(r, i)
		local k = r.head + i
		if k >= r.cap then
			k = k - r.cap
		end
		return slot(r, k)
	end

	local function first_live(p, r, t)
		local lo, hi = 0, r.n
		while lo < hi do
			local mid = floor((lo + hi) / 2)
			if t - at(r, mid) >= p.period then
				lo = mid + 1
			else
				hi = mid
			end
		end
		return lo
	end

	function m.check(p, r, now, v)
		local t = effective_now(now, r.n > 0 and at(r, r.n - 1) or 0)
		local first = first_live(p, r, t)
		local live = r.n - first
		v[3] = p.count - live
		v[4] = live > 0 and at(r, r.n - 1) + p.period or t
		if p.cost > p.count then
			deny_never(p, v)
		elseif live + p.cost <= p.count then
			allow(v)
		else
			local k = first + (live + p.cost - p.count) - 1
			deny(v, at(r, k) + p.period - t)
		end
	end

	function m.consume(p, r, now, v)
		local t = effective_now(now, r.n > 0 and at(r, r.n - 1) or 0)
		local first = first_live(p, r, t)
		local n = r.n - first
		local head = n > 0 and fmod(r.head + first, r.cap) or 0
		local c = p.cost
		if c > r.cap - n then
			c = r.cap - n
		end
		local k = head + n
		if k >= r.cap then
			k = k - r.cap
		end
		local run = c
		if run > r.cap - k then
			run = r.cap - k
		end
		if run > 0 then
			table.insert(r.runs, { k, run, t })
		end
		if c - run > 0 then
			table.insert(r.runs, { 0, c - run, t })
		end
		r.n, r.head = n + c, head
		v[3] = p.count - r.n
		v[4] = t + p.period
		allow(v)
	end

	function m.expiry(p, r)
		return r.n > 0 and at(r, r.n - 1) + p.period or 0
	end

	function m.store(r, ttl)
		if r.reset then
			redis.call('DEL', r.key)
		end
		redis.call('SETRANGE', r.key, 0,
			   MAGIC .. struct.pack('>d>d>d', r.cap, r.n, r.head))
		for _, run in ipairs(r.runs) do
			redis.call('SETRANGE', r.key, HDR + 8 * run[1],
				   string.rep(struct.pack('>d', run[3]), run[2]))
		end
		redis.call('PEXPIRE', r.key, ttl)
	end

	return m
end

-- ------------------------------------------------------------------
-- Dispatch

local FIXED, ELASTIC, MOVING, SLIDING, GCRA = 0, 1, 2, 3, 4
local made = {}

local function impl(s)
	local m = made[s]
	if m == nil then
		if s == MOVING then
			m = make_moving()
		elseif s == SLIDING then
			m = make_sliding(wide())
		elseif s == GCRA then
			m = make_gcra(wide())
		else
			error('rategate: unknown strategy ' .. tostring(s))
		end
		made[s] = m
	end
	return m
end

local function check(p, st, now, v)
	local s = p.strategy
	if s == FIXED then
		local t, used, wend = fixed_view(p, st, now)
		window_verdict(p, t, used, wend, v)
	elseif s == ELASTIC then
		local t, used, wend = elastic_view(p, st, now)
		window_verdict(p, t, used, wend, v)
	else
		impl(s).check(p, st, now, v)
	end
end

local function consume(p, st, now, v)
	local s = p.strategy
	if s == FIXED then
		local _, used, wend = fixed_view(p, st, now)
		st[1] = wend - p.period
		st[2] = used + p.cost
		v[3] = st[2] < p.count and p.count - st[2] or 0
		v[4] = wend
		allow(v)
	elseif s == ELASTIC then
		local t, used = elastic_view(p, st, now)
		st[1] = t + p.period
		st[2] = used + p.cost
		v[3] = st[2] < p.count and p.count - st[2] or 0
		v[4] = st[1]
		allow(v)
	else
		impl(s).consume(p, st, now, v)
	end
end

-- A denied hit: only the elastic window moves.  Returns true when the
-- state changed.
local function penalize(p, st, now, v)
	if p.strategy ~= ELASTIC then
		return false
	end
	local t, used = elastic_view(p, st, now)
	v[4] = t + p.period
	if v[1] == 0 then
		v[5] = p.period
	end
	if used ~= 0 then
		st[1] = t + p.period
		return true
	end
	return false
end

local function expiry(p, st)
	local s = p.strategy
	if s == FIXED then
		return st[2] ~= 0 and st[1] + p.period or 0
	elseif s == ELASTIC then
		return st[2] ~= 0 and st[1] or 0
	end
	return impl(s).expiry(p, st)
end

-- ------------------------------------------------------------------
-- Text states: "STRATEGY COUNT w0 w1 [w2]"

local function words_load(key, p)
	local s = redis.call('GET', key)
	local n = p.strategy == SLIDING and 3 or 2
	if s then
		local a, b, w0, w1, w2 = match(s, '^(%d+) (%d+) (%d+) (%d+) ?(%d*)$')
		if a == p.strategy_s and b == p.count_s and
		   (n == 3) == (w2 ~= '') then
			if n == 2 then
				return { fromdec(w0), fromdec(w1) }
			end
			return { fromdec(w0), fromdec(w1), fromdec(w2) }
		end
	end
	if n == 2 then
		return { 0, 0 }
	end
	return { 0, 0, 0 }
end

local function words_store(key, p, st, ttl)
	local v
	if #st == 2 and type(st[2]) == 'number' then
		v = format('%s %s %d %d', p.strategy_s, p.count_s, st[1], st[2])
	elseif #st == 2 then
		v = format('%s %s %s %s', p.strategy_s, p.count_s, todec(st[1]),
			   todec(st[2]))
	else
		v = format('%s %s %s %s %s', p.strategy_s, p.count_s,
			   todec(st[1]), todec(st[2]), todec(st[3]))
	end
	redis.call('SET', key, v, 'PX', ttl)
end

local TTL_MAX = 4503599627370496        -- 2^52 ms: an absurd state's TTL

-- Milliseconds from now until expiry, for PEXPIRE; 0 when the state is
-- already equivalent to a fresh one.
local function ttl_of(expiry, now)
	local ttl
	if type(expiry) == 'table' then
		ttl = TTL_MAX
	elseif expiry <= now then
		return 0
	else
		ttl = expiry - now
		if ttl > TTL_MAX then
			ttl = TTL_MAX
		end
	end
	if virtual and ttl < VIRTUAL_TTL_MIN then
		return VIRTUAL_TTL_MIN
	end
	return ttl
end

local function copy(st)
	local c = {}
	for i = 1, #st do
		c[i] = st[i]
	end
	return c
end

-- ------------------------------------------------------------------
-- The calls

local function now_of(arg)
	local now
	now, virtual = time_of(arg)
	return now
end

local function apply()
	local mode = ARGV[2]
	local now = now_of(ARGV[3])
	local n = #KEYS
	local ops, keys = {}, {}
	for i = 1, n do
		local a = 3 + 6 * (i - 1)
		local p = {
			strategy_s = ARGV[a + 1],
			strategy = tonumber(ARGV[a + 1]),
			count_s = ARGV[a + 2],
			count = tonumber(ARGV[a + 2]),
			period = tonumber(ARGV[a + 3]),
			burst = tonumber(ARGV[a + 4]),
			cost = tonumber(ARGV[a + 5]),
			probe = ARGV[a + 6] == '1',
			key = KEYS[i],
		}
		ops[i] = p
		local k = keys[p.key]
		if not k then
			k = { p = p }
			if p.strategy == MOVING then
				k.work = impl(MOVING).load(p.key, p.count)
			elseif p.strategy == ELASTIC then
				-- penalize needs the state before the batch
				k.orig = words_load(p.key, p)
				k.work = copy(k.orig)
			else
				k.work = words_load(p.key, p)
			end
			keys[p.key] = k
		end
	end
	-- Check every op on the state the earlier ops of the batch leave
	-- (memstore's scratch copies): this is what a full hit writes.
	local vcheck, vafter, all = {}, {}, true
	for i = 1, n do
		local p = ops[i]
		local v = { 0, 0, 0, 0, 0 }
		local work = keys[p.key].work
		check(p, work, now, v)
		vcheck[i] = v
		if v[1] == 1 and not p.probe then
			local a = { v[1], v[2], v[3], v[4], v[5] }
			consume(p, work, now, a)
			vafter[i] = a
		end
		all = all and v[1] == 1
	end
	local verdicts = vcheck
	if mode == '1' and all then
		verdicts = {}
		for i = 1, n do
			local p = ops[i]
			verdicts[i] = p.probe and vcheck[i] or vafter[i]
			keys[p.key].dirty = keys[p.key].dirty or not p.probe
		end
		for key, k in pairs(keys) do
			if k.dirty then
				local ttl = ttl_of(expiry(k.p, k.work), now)
				if ttl == 0 then
					redis.call('DEL', key)
				elseif k.p.strategy == MOVING then
					impl(MOVING).store(k.work, ttl)
				else
					words_store(key, k.p, k.work, ttl)
				end
			end
		end
	elseif mode == '1' then
		-- Denied: nothing is consumed; the elastic window moves.
		for i = 1, n do
			local p = ops[i]
			if not p.probe then
				local k = keys[p.key]
				if penalize(p, k.orig, now, vcheck[i]) then
					k.penalized = true
				end
			end
		end
		for key, k in pairs(keys) do
			if k.penalized then
				local ttl = ttl_of(expiry(k.p, k.orig), now)
				if ttl == 0 then
					redis.call('DEL', key)
				else
					words_store(key, k.p, k.orig, ttl)
				end
			end
		end
	end
	local res, r = {}, 0
	for i = 1, n do
		local v = verdicts[i]
		for j = 1, 5 do
			local x = v[j]
			r = r + 1
			res[r] = type(x) == 'number' and x or todec(x)
		end
	end
	res[r + 1] = now
	return res
end

-- In-flight leases: a sorted set of lease ids scored by expiry; a lease is
-- gone at its expiry (expiry <= now), as in rl_inflight_*.
local function acquire()
	local key = KEYS[1]
	local now = now_of(ARGV[2])
	local max = tonumber(ARGV[3])
	local lease = tonumber(ARGV[4])
	if lease < 0 then
		lease = 0
	end
	redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
	local held = redis.call('ZCARD', key)
	local got = 0
	if held < max then
		redis.call('ZADD', key, now + lease, ARGV[5])
		held = held + 1
		got = 1
		local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
		local ttl = ttl_of(tonumber(last[2]), now)
		if ttl > 0 then
			redis.call('PEXPIRE', key, ttl)
		end
	end
	return { got, held }
end

local function release()
	local key = KEYS[1]
	local now = now_of(ARGV[2])
	redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
	local gone = redis.call('ZREM', key, ARGV[3])
	return { gone, redis.call('ZCARD', key) }
end

if ARGV[1] == 'apply' then
	return apply()
elseif ARGV[1] == 'acquire' then
	return acquire()
elseif ARGV[1] == 'release' then
	return release()
end
error('rategate: unknown call ' .. tostring(ARGV[1]))
