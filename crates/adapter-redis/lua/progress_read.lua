-- Reads an operation's retained events (read-only).
-- KEYS[1] snapshot, KEYS[2] event stream.
-- ARGV[1] read events after this id ('' = from the oldest retained), ARGV[2] at most this many
-- (0 = none).
-- Returns { 'ok', snapshot JSON, latest event id ('' = none), trimmed (1 when an event after
-- ARGV[1] was already trimmed, per the snapshot's trimmed_through), state, entries } or
-- { 'not_found' }.
local raw = redis.call('GET', KEYS[1])
if not raw then return { 'not_found' } end
local after, count = ARGV[1], tonumber(ARGV[2])
local op = cjson.decode(raw)
local state = op.state
local last_id = ''
local trimmed = 0
local entries = {}
if redis.call('EXISTS', KEYS[2]) == 1 then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then last_id = last[1][1] end
  if after ~= '' and type(op.trimmed_through) == 'string' then
    local dm, ds = string.match(op.trimmed_through, '^(%d+)-(%d+)$')
    local am, as = string.match(after, '^(%d+)-(%d+)$')
    dm, ds, am, as = tonumber(dm), tonumber(ds), tonumber(am), tonumber(as)
    if dm and am and (dm > am or (dm == am and ds > as)) then trimmed = 1 end
  end
  if count > 0 then
    local from = '-'
    if after ~= '' then from = '(' .. after end
    entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', count)
  end
end
return { 'ok', raw, last_id, trimmed, state, entries }
