-- Souq: the rate limits (GCRA) and monthly quotas of a batch of calls, decided in one
-- atomic step, in order. Mirrors edge-proxy/src/limit/gcra.rs and memory.rs.
--
-- For the i-th call (from 0), KEYS and ARGV hold:
-- KEYS[2i+1]  the rate state: the theoretical arrival time (TAT), µs on Redis' clock
-- KEYS[2i+2]  this month's call counter of the subscription
-- ARGV[5i+1]  emission interval T, µs (60 s / calls a minute)
-- ARGV[5i+2]  burst: calls that may come at once (a minute's worth)
-- ARGV[5i+3]  monthly quota
-- ARGV[5i+4]  calls the control plane had committed this month when its table was built
-- ARGV[5i+5]  TTL of the counter, s (past the month's end)
--
-- Returns three numbers per call:
--   1, remaining, reset_us       the call passes (and is counted)
--   0, retry_after_us, reset_us  it is over the rate
--   2, used, 0                   the month's quota is used up
-- Numbers are written with %d: Lua's own number formatting keeps only 14 digits.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 0, #KEYS / 2 - 1 do
  local rate_key, quota_key = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local interval = tonumber(ARGV[5 * i + 1])
  local burst = tonumber(ARGV[5 * i + 2])
  local quota = tonumber(ARGV[5 * i + 3])
  local base = tonumber(ARGV[5 * i + 4])

  -- The counter starts from what the control plane has committed, never below it.
  local used = tonumber(redis.call('GET', quota_key))
  if not used then
    redis.call('SET', quota_key, string.format('%d', base), 'EX', ARGV[5 * i + 5])
    used = base
  elseif used < base then
    redis.call('SET', quota_key, string.format('%d', base), 'KEEPTTL')
    used = base
  end

  if used >= quota then
    table.insert(out, 2); table.insert(out, used); table.insert(out, 0)
  else
    local tat = tonumber(redis.call('GET', rate_key) or '0')
    if tat < now then
      tat = now
    end
    local new_tat = tat + interval
    local limit_at = now + burst * interval
    if new_tat > limit_at then
      table.insert(out, 0); table.insert(out, new_tat - limit_at); table.insert(out, tat - now)
    else
      -- The state is worthless once the TAT has passed: let it expire then.
      local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
      redis.call('SET', rate_key, string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
      redis.call('INCR', quota_key)
      table.insert(out, 1); table.insert(out, math.floor((limit_at - new_tat) / interval)); table.insert(out, new_tat - now)
    end
  end
end
return out
