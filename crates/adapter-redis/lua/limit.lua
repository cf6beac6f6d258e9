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
-- text parsing or formatting (the zero byte tells it from the text form of earlier versions). Per-check state lives in one flat array (no table per check), which
-- keeps the garbage, and with it Lua's GC work, small on this hot path.
--
-- Integer math in doubles is exact: Policy bounds (limit <= 1e7, window <= 7 days) keep every
-- product below 2^53, and divisions go through idiv, which corrects any rounding.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local floor, min, max = math.floor, math.min, math.max

-- floor(a / b) for integers a >= 0, b > 0, exact.
local function idiv(a, b)
  local q = floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

-- Per check i, at s[8(i-1) + 1 ..]: allowed (true/false), retry (or -1), then for 'sw':
-- window start, current, previous, elapsed, used (scaled), whether the stored state is of
-- this window; for 'log': used, newest (or -1).
local s = {}
local all_allowed = true

for i = 1, #KEYS do
  local a = 3 * i
  local algo, limit, w = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local key = KEYS[i]
  local o = 8 * (i - 1)
  local allowed, retry
  if algo == 'sw' then
    -- CounterState rolled to now.
    local ws, cur, prev = 0, 0, 0
    local raw = redis.call('GET', key)
    if raw then
      if #raw == 25 and string.byte(raw, 1) == 0 then
        local _
        _, ws, cur, prev = struct.unpack('<Bddd', raw)
      else
        -- The text form of earlier versions: 'ws:cur:prev'.
        local x, y, z = string.match(raw, '^(%d+):(%d+):(%d+)$')
        if x then ws, cur, prev = tonumber(x), tonumber(y), tonumber(z) end
      end
    end
    local start = now - (now % w)
    if ws == start then
      -- same window
    elseif ws + w == start then
      prev = cur
      cur = 0
    else
      prev = 0
      cur = 0
    end
    local same = raw and ws == start
    ws = start
    local e = now - ws
    local used_scaled = prev * (w - e) + cur * w
    -- used_scaled + cost * w <= limit * w, written so that no sum exceeds limit * w
    allowed = used_scaled <= (limit - cost) * w
    if not allowed then
      if cur + cost <= limit then
        local keep = idiv((limit - cur - cost) * w, prev)
        retry = w - e - min(keep, w - e)
      else
        local keep = idiv((limit - cost) * w, cur)
        retry = (w - e) + max(0, w - keep)
      end
    end
    -- A key written in this window already expires after this window's successor ends.
    s[o + 8] = same
    s[o + 3], s[o + 4], s[o + 5], s[o + 6], s[o + 7] = ws, cur, prev, e, used_scaled
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
    s[o + 3], s[o + 4] = used, newest
  end
  s[o + 1], s[o + 2] = allowed, retry or -1
  if not allowed then all_allowed = false end
end

local consumed = all_allowed
local out = { consumed and 1 or 0 }
for i = 1, #KEYS do
  local a = 3 * i
  local algo, limit, w = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local key = KEYS[i]
  local o = 8 * (i - 1)
  local remaining, reset
  if algo == 'sw' then
    local ws, cur, prev, e, scaled = s[o + 3], s[o + 4], s[o + 5], s[o + 6], s[o + 7]
    if consumed then
      cur = cur + cost
      scaled = scaled + cost * w
      if cost > 0 then
        local packed = struct.pack('<Bddd', 0, ws, cur, prev)
        if s[o + 8] then
          -- Written earlier in this window: its TTL (2 windows from then) already covers the
          -- state's life (this window and the next).
          redis.call('SET', key, packed, 'KEEPTTL')
        else
          redis.call('SET', key, packed, 'PX', 2 * w)
        end
      end
    end
    -- ceil(scaled / w)
    local q = idiv(scaled, w)
    if q * w < scaled then q = q + 1 end
    remaining = max(0, limit - q)
    if cur > 0 then
      reset = (w - e) + w
    elseif prev > 0 then
      reset = w - e
    else
      reset = 0
    end
  else
    local used, newest = s[o + 3], s[o + 4]
    if consumed and cost > 0 then
      used = used + cost
      newest = now
      redis.call('ZADD', key, now, string.format('%d:%s:%d:%d', now, ARGV[2], i, cost))
      redis.call('PEXPIRE', key, w)
    end
    remaining = max(0, limit - used)
    if newest >= 0 then reset = newest + w - now else reset = 0 end
  end
  local n = #out
  out[n + 1] = s[o + 1] and 1 or 0
  out[n + 2] = remaining
  out[n + 3] = reset
  out[n + 4] = s[o + 2]
end
return out
