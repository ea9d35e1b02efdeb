-- Souq: the rate limit (GCRA) and the monthly quota of one subscription, decided in one
-- atomic step. Mirrors edge-proxy/src/limit/gcra.rs and memory.rs.
--
-- KEYS[1]  the rate state: the theoretical arrival time (TAT), µs on Redis' clock
-- KEYS[2]  this month's call counter of the subscription
-- ARGV[1]  emission interval T, µs (60 s / calls a minute)
-- ARGV[2]  burst: calls that may come at once (a minute's worth)
-- ARGV[3]  monthly quota
-- ARGV[4]  calls the control plane had committed this month when its table was built
-- ARGV[5]  TTL of the counter, s (past the month's end)
--
-- Returns {1, remaining, reset_us} when the call passes (and is counted),
--         {0, retry_after_us, reset_us} when it is over the rate,
--         {2, used, 0} when the month's quota is used up.
-- Numbers are written with %d: Lua's own number formatting keeps only 14 digits.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local base = tonumber(ARGV[4])

-- The counter starts from what the control plane has committed, and never falls below it.
redis.call('SET', KEYS[2], string.format('%d', base), 'NX', 'EX', ARGV[5])
local used = tonumber(redis.call('GET', KEYS[2]))
if used < base then
  redis.call('SET', KEYS[2], string.format('%d', base), 'KEEPTTL')
  used = base
end
if used >= quota then
  return {2, used, 0}
end

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
-- The state is worthless once the TAT has passed: let it expire then.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.ceil((new_tat - now) / 1000) + 1000))
redis.call('INCR', KEYS[2])
return {1, math.floor((now - allow_at) / interval), new_tat - now}
