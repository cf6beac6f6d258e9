-- Operation::apply of one update, its event, TTL refresh and wake-up in one atomic step.
-- KEYS[1] snapshot, KEYS[2] event stream.
-- ARGV[1] ttl ms, ARGV[2] event cap, ARGV[3] wake channel (same {p:<id>} tag),
-- ARGV[4] step reference ('' | 'name' | 'index'), ARGV[5] step name or 0-based index,
-- ARGV[6] the step's fraction as text, ARGV[7] '1' when a message follows, ARGV[8] message,
-- ARGV[9] new state or '', ARGV[10] '1' when the client already found the update malformed
-- (reported only after the not-found and terminal checks, in Operation::apply's order).
-- Fractions are stored as the client's exact decimal text, so no float is re-encoded here.
-- WAKE_PUBLISH is defined by the line the adapter prepends: 'PUBLISH' on one server,
-- 'SPUBLISH' (sharded pub/sub, the channel's slot is the operation's) on a Redis 7 cluster.
-- Returns { 'ok', event id, kind, stored JSON } or { error tag, detail }.
local raw = redis.call('GET', KEYS[1])
if not raw then return { 'not_found', '' } end
local op = cjson.decode(raw)
if op.state ~= 'running' then return { 'terminal', op.state } end
if ARGV[10] == '1' then return { 'invalid', '' } end
local steps = op.steps
local index = nil
if ARGV[4] == 'name' then
  for i = 1, #steps do
    if steps[i].name == ARGV[5] then index = i break end
  end
  if not index then return { 'unknown_step', ARGV[5] } end
elseif ARGV[4] == 'index' then
  local i = tonumber(ARGV[5])
  if i == nil or i >= #steps then return { 'step_index', tostring(#steps) } end
  index = i + 1
end
if index then
  for i = 1, index - 1 do steps[i].fraction = '1' end
  steps[index].fraction = ARGV[6]
end
if ARGV[7] == '1' then op.message = ARGV[8] end
local kind = 'progress'
if ARGV[9] ~= '' then
  op.state = ARGV[9]
  if ARGV[9] == 'succeeded' then
    for i = 1, #steps do steps[i].fraction = '1' end
  end
  if ARGV[9] ~= 'running' then kind = 'end' end
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
if now > op.updated_at then op.updated_at = now end
-- MAXLEN trimming leaves no trace in XINFO (max-deleted-entry-id only follows XDEL), so the
-- snapshot remembers the newest event this XADD trims: subscribers resuming before it get a
-- snapshot first.
local cap = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[2])
if len >= cap then
  local gone = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', len - cap + 1)
  if #gone > 0 then op.trimmed_through = gone[#gone][1] end
end
local json = cjson.encode(op)
-- As text: a Lua number passed to redis.call costs Redis a '%.17g' float format.
local ttl = ARGV[1]
redis.call('SET', KEYS[1], json, 'PX', ttl)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '*', 'k', kind, 'o', json)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call(WAKE_PUBLISH, ARGV[3], id)
return { 'ok', id, kind, json }
