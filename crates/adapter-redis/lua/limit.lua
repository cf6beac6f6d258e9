-- One atomic check of several rate-limit policies (all-or-nothing), mirroring
-- spool_domain::limit::counter::evaluate and spool_domain::limit::log line by line.
--
-- KEYS[i]           the key of check i (all under the shared {rl} hash tag)
-- ARGV[1]           cost (0 = peek)
-- ARGV[2]           a random nonce, making sliding-log members unique
-- ARGV[3i..3i+2]    for check i (1-based, offset 3*(i-1)+3): algorithm ('sw' | 'log'), limit, window ms
--
-- Returns { all_allowed, then per check: allowed, remaining, reset_ms, retry_ms (-1 = none) }.
--
-- A sliding-window counter is one string per key: a zero byte, then window start, current and
-- previous count as three little-endian doubles (struct), so reading and writing it is no
-- text parsing or formatting (the zero byte tells it from the text form of earlier versions).
--
-- Cost: this runs once per request of every rate-limited route, so the hot path (one 'sw'
-- check) avoids what the Lua VM pays for: per-check state lives in one flat array sized for
-- one check up front (no table per check, no rehash), arguments are parsed once (by arithmetic
-- coercion, not a tonumber() C call each), and the reply table is built at its final size.
-- `redis-server` under callgrind: 71k -> 57k instructions per one-policy check; the floor of
-- TIME + GET + SET with this reply is about 41k (docs/PERFORMANCE.md).
--
-- Integer math in doubles is exact: Policy bounds (limit <= 1e7, window <= 7 days) keep every
-- product below 2^53, and divisions go through idiv, which corrects any rounding.
local t = redis.call('TIME')
-- Numeric strings coerce in arithmetic: no tonumber() call (a C call each) on the hot path.
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local cost = ARGV[1] + 0
local floor, min, max = math.floor, math.min, math.max
local n = #KEYS

-- floor(a / b) for integers a >= 0, b > 0, exact.
local function idiv(a, b)
  local q = floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

-- Phase 1: every check evaluated, nothing written. Per check i, at s[10(i-1) + 1 ..]: allowed,
-- retry (-1 = none), limit, window, then for 'sw': window start, current, previous, elapsed,
-- used (scaled), whether the stored state is of this window; for 'log': used, newest (-1 =
-- none). Sized for one check up front (no rehash as it fills).
local s = { false, -1, 0, 0, 0, 0, 0, 0, 0, false }
local all_allowed = true
for i = 1, n do
  local a = 3 * i
  local limit, w = ARGV[a + 1] + 0, ARGV[a + 2] + 0
  local key = KEYS[i]
  local o = 10 * (i - 1)
  local allowed, retry = true, -1
  if ARGV[a] == 'sw' then
    local ws, cur, prev = 0, 0, 0
    local raw = redis.call('GET', key)
    if raw then
      local tag, x, y, z
      if #raw == 25 then tag, x, y, z = struct.unpack('<Bddd', raw) end
      if tag == 0 then
        ws, cur, prev = x, y, z
      else
        x, y, z = string.match(raw, '^(%d+):(%d+):(%d+)$')
        if x then ws, cur, prev = tonumber(x), tonumber(y), tonumber(z) end
      end
    end
    local start = now - now % w
    local same = raw and ws == start
    if not same then
      if ws + w == start then prev, cur = cur, 0 else prev, cur = 0, 0 end
    end
    local e = now - start
    local used = prev * (w - e) + cur * w
    -- used + cost * w <= limit * w, written so that no sum exceeds limit * w
    allowed = used <= (limit - cost) * w
    if not allowed then
      if cur + cost <= limit then
        retry = w - e - min(idiv((limit - cur - cost) * w, prev), w - e)
      else
        retry = (w - e) + max(0, w - idiv((limit - cost) * w, cur))
      end
    end
    s[o + 5], s[o + 6], s[o + 7], s[o + 8], s[o + 9], s[o + 10] = start, cur, prev, e, used, same
  else
    -- Exact sliding log: an entry counts while at + w > now.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - w)
    local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local used = 0
    for j = 1, #entries, 2 do
      used = used + (tonumber(string.match(entries[j], ':(%d+)$')) or 0)
    end
    local newest = -1
    if #entries > 0 then newest = tonumber(entries[#entries]) end
    allowed = used + cost <= limit
    if not allowed then
      local still = used
      for j = 1, #entries, 2 do
        still = still - (tonumber(string.match(entries[j], ':(%d+)$')) or 0)
        if still + cost <= limit then
          retry = tonumber(entries[j + 1]) + w - now
          break
        end
      end
    end
    s[o + 5], s[o + 6] = used, newest
  end
  s[o + 1], s[o + 2], s[o + 3], s[o + 4] = allowed, retry, limit, w
  if not allowed then all_allowed = false end
end

-- Phase 2: when every check allows, each consumes `cost`; each reports its numbers.
local out = { all_allowed and 1 or 0, 0, 0, 0, 0 }
for i = 1, n do
  local o = 10 * (i - 1)
  local limit, w = s[o + 3], s[o + 4]
  local remaining, reset
  if ARGV[3 * i] == 'sw' then
    local start, cur, prev, e, used = s[o + 5], s[o + 6], s[o + 7], s[o + 8], s[o + 9]
    if all_allowed then
      cur = cur + cost
      used = used + cost * w
      if cost > 0 then
        local packed = struct.pack('<Bddd', 0, start, cur, prev)
        if s[o + 10] then
          -- Written earlier in this window: its TTL (2 windows from then) already covers the
          -- state's life (this window and the next).
          redis.call('SET', KEYS[i], packed, 'KEEPTTL')
        else
          redis.call('SET', KEYS[i], packed, 'PX', 2 * w)
        end
      end
    end
    -- ceil(used / w)
    local q = idiv(used, w)
    if q * w < used then q = q + 1 end
    remaining = max(0, limit - q)
    if cur > 0 then
      reset = (w - e) + w
    elseif prev > 0 then
      reset = w - e
    else
      reset = 0
    end
  else
    local used, newest = s[o + 5], s[o + 6]
    if all_allowed and cost > 0 then
      used = used + cost
      newest = now
      redis.call('ZADD', KEYS[i], now, string.format('%d:%s:%d:%d', now, ARGV[2], i, cost))
      redis.call('PEXPIRE', KEYS[i], w)
    end
    remaining = max(0, limit - used)
    if newest >= 0 then reset = newest + w - now else reset = 0 end
  end
  local b = 4 * i - 2
  out[b], out[b + 1], out[b + 2], out[b + 3] = s[o + 1] and 1 or 0, remaining, reset, s[o + 2]
end
return out
