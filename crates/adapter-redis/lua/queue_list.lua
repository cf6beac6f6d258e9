-- Lists tasks of one queue (QueueStore::list) after the queue's maintenance, so every status
-- shown is the one a worker would act on. Bounded: at most LIMIT entries of each index read
-- (MAX_SCAN of the due-time index, shared by scheduled and retrying tasks).
-- ARGV[3] listing: queued | scheduled | failed | running | succeeded | dead | cancelled |
--                  finished
-- ARGV[4] limit (1 ..= 200, checked by the client)
-- ARGV[5] max scan of the due-time index
-- Reply: an array of HGETALL field lists, in the listing's order.
local listing = ARGV[3]
local limit = tonumber(ARGV[4])
local max_scan = tonumber(ARGV[5])
local since = '(' .. fmt(NOW - RETENTION)
local ids = {}

if listing == 'queued' then
  ids = redis.call('ZRANGE', K_READY, 0, limit - 1)
elseif listing == 'running' then
  ids = redis.call('ZRANGE', K_RUNNING, 0, limit - 1)
elseif listing == 'scheduled' or listing == 'failed' then
  local due = redis.call('ZRANGE', K_SCHED, 0, max_scan - 1)
  for _, id in ipairs(due) do
    if #ids >= limit then break end
    if redis.call('HGET', task_key(id), 'status') == listing then ids[#ids + 1] = id end
  end
elseif FINISHED[listing] then
  ids = redis.call('ZREVRANGEBYSCORE', FINISHED[listing], '+inf', since, 'LIMIT', 0, limit)
elseif listing == 'finished' then
  local all = {}
  for _, z in ipairs({ K_SUCC, K_DEAD, K_CANC }) do
    local part = redis.call('ZREVRANGEBYSCORE', z, '+inf', since, 'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #part, 2 do all[#all + 1] = { part[i], tonumber(part[i + 1]) } end
  end
  table.sort(all, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] > b[1]
  end)
  for i = 1, math.min(limit, #all) do ids[i] = all[i][1] end
else
  wake()
  return redis.error_reply('ERR queue_list: unknown listing ' .. tostring(listing))
end

local out = {}
for _, id in ipairs(ids) do
  local fields = redis.call('HGETALL', task_key(id))
  if #fields > 0 then out[#out + 1] = fields end
end
wake()
return out
