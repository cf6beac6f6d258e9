-- Task::complete. KEYS[9] the task; ARGV[3] token, ARGV[4] '1' when a result follows,
-- ARGV[5] the result JSON.
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
