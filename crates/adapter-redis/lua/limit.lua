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
-- Integer math in doubles is exact: Policy bounds (limit <= 1e7, window <= 7 days) keep every
-- product below 2^53, and divisions go through idiv, which corrects any rounding.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local nonce = ARGV[2]

-- floor(a / b) for integers a >= 0, b > 0, exact.
local function idiv(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local function ceil_div(a, b)
  local q = idiv(a, b)
  if q * b < a then q = q + 1 end
  return q
end

local evals = {}
local all_allowed = true

for i = 1, #KEYS do
  local base = 3 * (i - 1) + 3
  local algo, limit, w = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local key = KEYS[i]
  local ev = { algo = algo, limit = limit, w = w, key = key }
  if algo == 'sw' then
    -- CounterState rolled to now.
    local ws, cur, prev = 0, 0, 0
    local raw = redis.call('GET', key)
    if raw then
      local a, b, c = string.match(raw, '^(%d+):(%d+):(%d+)$')
      if a then ws, cur, prev = tonumber(a), tonumber(b), tonumber(c) end
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
    ws = start
    local e = now - ws
    local used_scaled = prev * (w - e) + cur * w
    -- used_scaled + cost * w <= limit * w, written so that no sum exceeds limit * w
    ev.allowed = used_scaled <= (limit - cost) * w
    ev.ws, ev.cur, ev.prev, ev.e, ev.used_scaled = ws, cur, prev, e, used_scaled
    if not ev.allowed then
      if cur + cost <= limit then
        local keep = idiv((limit - cur - cost) * w, prev)
        ev.retry = w - e - math.min(keep, w - e)
      else
        local keep = idiv((limit - cost) * w, cur)
        ev.retry = (w - e) + math.max(0, w - keep)
      end
    end
  else
    -- Exact sliding log: an entry counts while at + w > now.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - w)
    local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local used = 0
    local list = {}
    for j = 1, #entries, 2 do
      local c = tonumber(string.match(entries[j], ':(%d+)$')) or 0
      local at = tonumber(entries[j + 1])
      used = used + c
      list[#list + 1] = { at = at, cost = c }
    end
    ev.used = used
    ev.newest = nil
    if #list > 0 then ev.newest = list[#list].at end
    ev.allowed = used + cost <= limit
    if not ev.allowed then
      local still = used
      for j = 1, #list do
        still = still - list[j].cost
        if still + cost <= limit then
          ev.retry = list[j].at + w - now
          break
        end
      end
    end
  end
  if not ev.allowed then all_allowed = false end
  evals[i] = ev
end

local consumed = all_allowed
local out = { consumed and 1 or 0 }
for i = 1, #evals do
  local ev = evals[i]
  local limit, w = ev.limit, ev.w
  local remaining, reset
  if ev.algo == 'sw' then
    local cur = ev.cur
    local scaled = ev.used_scaled
    if consumed then
      cur = cur + cost
      scaled = scaled + cost * w
      if cost > 0 then
        redis.call('SET', ev.key,
          string.format('%d:%d:%d', ev.ws, cur, ev.prev), 'PX', 2 * w)
      end
    end
    remaining = math.max(0, limit - ceil_div(scaled, w))
    if cur > 0 then
      reset = (w - ev.e) + w
    elseif ev.prev > 0 then
      reset = w - ev.e
    else
      reset = 0
    end
  else
    local used, newest = ev.used, ev.newest
    if consumed and cost > 0 then
      used = used + cost
      newest = now
      redis.call('ZADD', ev.key, now, string.format('%d:%s:%d:%d', now, nonce, i, cost))
      redis.call('PEXPIRE', ev.key, w)
    end
    remaining = math.max(0, limit - used)
    if newest then reset = newest + w - now else reset = 0 end
  end
  out[#out + 1] = ev.allowed and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = ev.retry or -1
end
return out
