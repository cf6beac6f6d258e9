-- Task::complete. KEYS[9] the task; ARGV[3] token, ARGV[4] '1' when a result follows,
-- ARGV[5] the result JSON.

-- The task hash is read once into a Lua table; only what changes is written, and the reply is
-- the table: no field-by-field reads, no HGETALL after the write.

-- The task hash as a table (field -> value); nil when the task does not exist.
local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Task::holds_lease, on a loaded task.
local function holds(t, token)
  return t.status == 'running' and t.lease_seq == token and t.lease_expires_at ~= nil
    and tonumber(t.lease_expires_at) > NOW
end

-- finish() on a loaded task, with `set` (field, value, ...) and `del` (fields) written in the
-- same HSET / HDEL; updates `t` to match the hash.
local function finish_loaded(id, key, t, status, set, del)
  t.status, t.finished_at = status, fmt(NOW)
  set[#set + 1] = 'status'
  set[#set + 1] = status
  set[#set + 1] = 'finished_at'
  set[#set + 1] = t.finished_at
  for i = 1, #set, 2 do t[set[i]] = set[i + 1] end
  redis.call('HSET', key, unpack(set))
  del[#del + 1] = 'lease_expires_at'
  for i = 1, #del do t[del[i]] = nil end
  redis.call('HDEL', key, unpack(del))
  redis.call('ZADD', FINISHED[status], t.finished_at, id)
  due_at(NOW + RETENTION + SLACK)
  redis.call('PEXPIRE', key, RETENTION_ARG)
  local uk = t.unique_key
  if uk then
    local ukey = BASE .. 'u:' .. uk
    if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
  end
end

-- A reply carrying a loaded (and updated) task, shaped like HGETALL.
local function reply_task(tag, t)
  wake()
  local flat = {}
  for k, v in pairs(t) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  return { tag, flat }
end

local key, token = KEYS[9], ARGV[3]
local t = load(key)
if t == nil then return fail_reply('not_found') end
if not holds(t, token) then return fail_reply('lease_lost') end
local id = t.id
redis.call('ZREM', K_RUNNING, id)
if ARGV[4] == '1' then
  finish_loaded(id, key, t, 'succeeded', { 'result', ARGV[5] }, {})
else
  finish_loaded(id, key, t, 'succeeded', {}, { 'result' })
end
return reply_task('ok', t)
