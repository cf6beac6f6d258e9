-- Task::new. ARGV[3..]: random ULID tail (16 chars), spec (the task's immutable description
-- as the client packed it: kind, priority, timeout, correlation id; never read here), payload,
-- rank, max_attempts, backoff ('<initial ms> <max ms> <factor> <none|full>'), unique key or '',
-- schedule ('now'|'after'|'at'), schedule ms, the caller's task id or '' (a ULID; '' = build
-- one from server time + tail).
-- Returns { 'created', id, now ms, due ms }, { 'duplicate', task fields } or
-- { 'collision', id }.
local tail, spec, payload, rank, max_attempts = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local backoff, unique, sched, sched_ms = ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local given = ARGV[12] or ''

-- A given id that names a task of this queue (any status; finished ones until their hash
-- expires with the retention) makes the enqueue idempotent: nothing is added.
if given ~= '' and redis.call('EXISTS', task_key(given)) == 1 then
  return reply('duplicate', task_key(given))
end

if unique ~= '' then
  local existing = redis.call('GET', BASE .. 'u:' .. unique)
  if existing then
    local ekey = task_key(existing)
    local st = redis.call('HGET', ekey, 'status')
    if st and FINISHED[st] == nil then
      return reply('duplicate', ekey)
    end
  end
end

local id = given
if id == '' then
  -- ULID: 48-bit server time in Crockford base32, then 80 random bits from the client.
  -- Digits as bytes into one string.char: no string per digit, no table.
  local A, byte = '0123456789ABCDEFGHJKMNPQRSTVWXYZ', string.byte
  local ms = NOW
  local d = {}
  for i = 10, 1, -1 do
    local r = ms % 32
    d[i] = byte(A, r + 1)
    ms = (ms - r) / 32
  end
  id = string.char(d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10]) .. tail
end
local key = task_key(id)
-- A given id was checked above; a generated one can only collide by chance.
if given == '' and redis.call('EXISTS', key) == 1 then
  return fail_reply('collision', id)
end

local due = NOW
if sched == 'after' then
  due = NOW + sched_ms
elseif sched == 'at' then
  due = math.max(sched_ms, NOW)
end

-- The whole hash in one HSET. The reply carries only what the server decided (id, time, due
-- time): the client builds the task from the spec it sent (Task::new).
-- Fields read by other scripts stay fields of their own; what only the client reads is packed
-- (spec, backoff), so every later HGETALL / HSET handles fewer fields.
-- Field order matters for speed, not meaning: a small hash is a listpack, and each field a
-- command names is found by a scan from the front. The fields every lease transition reads
-- or writes (status, lease_seq, attempts) come first; rank and id, which no hot path reads
-- by name, come last (callgrind: ~2k instructions less per task to reserve and as many to
-- complete, docs/PERFORMANCE-HISTORY.md).
local s_now = fmt(NOW)
local f = {
  'status', due > NOW and 'scheduled' or 'queued', 'lease_seq', '0', 'attempts', '0',
  'spec', spec, 'payload', payload, 'max_attempts', max_attempts, 'backoff', backoff,
  'enqueued_at', s_now,
}
local function put(k, v)
  f[#f + 1] = k
  f[#f + 1] = v
end
if unique ~= '' then put('unique_key', unique) end
if due > NOW then
  put('scheduled_for', fmt(due))
else
  put('ready_at', s_now)
end
put('rank', rank)
put('id', id)
redis.call('HSET', key, unpack(f))
if unique ~= '' then redis.call('SET', BASE .. 'u:' .. unique, id) end
if due > NOW then
  redis.call('ZADD', K_SCHED, due, id)
  due_at(due)
else
  -- make_ready without re-reading the rank or re-writing the status.
  local seq = redis.call('INCR', K_SEQ)
  redis.call('ZADD', K_READY, fmt(tonumber(rank) * RANK_SCALE + seq), id)
  redis.call('ZADD', K_WAITING, s_now, id)
  S.woke = true
end
wake()
return { 'created', id, NOW, due }
