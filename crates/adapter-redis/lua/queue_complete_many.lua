-- Task::complete of several tasks of the queue. ARGV[3] the number of items n, then per item
-- i (0-based, at 4 + 4i): task id, token, '1' when a result follows, the result JSON.
-- Each item is checked against its own lease, in order, exactly as queue_complete does; the
-- running -> succeeded moves of all items go in one ZREM and one ZADD.
-- Returns { 'ok', outcome per item } with outcome 'ok', 'lease_lost' or 'not_found': only
-- the outcome travels back, not the task.
local n = tonumber(ARGV[3])
local out = { 'ok' }
local done, moved = {}, {}
local finished_at = fmt(NOW)
for i = 0, n - 1 do
  local a = 4 + 4 * i
  local id, token = ARGV[a], ARGV[a + 1]
  local key = task_key(id)
  local f = redis.call('HMGET', key, 'status', 'lease_seq', 'lease_expires_at', 'unique_key')
  if not f[1] then
    out[#out + 1] = 'not_found'
  elseif f[1] ~= 'running' or f[2] ~= token or not f[3] or tonumber(f[3]) <= NOW then
    out[#out + 1] = 'lease_lost'
  else
    -- The expiry of the lease stays in the hash: the status says the lease is over (readers
    -- ignore lease_expires_at unless running), and not deleting it saves a command per task.
    -- No earlier result can be there: a result is only written here and succeeded is final.
    if ARGV[a + 2] == '1' then
      redis.call('HSET', key, 'status', 'succeeded', 'finished_at', finished_at,
        'result', ARGV[a + 3])
    else
      redis.call('HSET', key, 'status', 'succeeded', 'finished_at', finished_at)
    end
    redis.call('PEXPIRE', key, RETENTION_ARG)
    local uk = f[4]
    if uk then
      local ukey = BASE .. 'u:' .. uk
      if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
    end
    done[#done + 1] = id
    moved[#moved + 1] = finished_at
    moved[#moved + 1] = id
    out[#out + 1] = 'ok'
  end
end
if #done > 0 then
  redis.call('ZREM', K_RUNNING, unpack(done))
  redis.call('ZADD', K_SUCC, unpack(moved))
  due_at(NOW + RETENTION + SLACK)
end
return out
