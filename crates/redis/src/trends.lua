-- Applies one batch of search events to the trends, atomically, with the consumed positions.
-- The rules are those of bookstore_domain::trends (see there); this is their Redis twin.
--
-- ARGV[1]: the key prefix. ARGV[2]: the batch as JSON:
--   group, positions = [[partition key, from or -1, to]], events = [[query_normalized, spelling,
--   user or "", cap window, log weight, occurred_at ms, books JSON]], user_cap, prune_below,
--   max_trends.
-- Keys: <p>score (zset, log2 score), <p>count (zset, all-time count), <p>q:<query> (hash: d
-- display, dn its count, l last search ms, b books JSON, ls log2 score, s:<spelling> counts),
-- <p>cap:<window> (hash: user \31 query -> searches), <p>capw (zset of the windows with
-- counters), <p>pos:<group> (hash: partition -> next offset). Five commands per event, none of
-- them a scan.
local p = ARGV[1]
local b = cjson.decode(ARGV[2])

-- The positions first, before any write: a stale batch changes nothing.
local pos = p .. 'pos:' .. b.group
for _, u in ipairs(b.positions) do
  local current = redis.call('HGET', pos, u[1])
  if u[2] < 0 then
    if current then return redis.error_reply('STALE ' .. u[1] .. ' is already at ' .. current) end
  elseif (not current) or tonumber(current) ~= u[2] then
    return redis.error_reply('STALE ' .. u[1] .. ' is not at ' .. u[2])
  end
end
for _, u in ipairs(b.positions) do
  redis.call('HSET', pos, u[1], string.format('%d', u[3]))
end

local LN2 = math.log(2)
local function log2_add(a, x)
  if not a then return x end
  local hi, lo = a, x
  if x > a then hi, lo = x, a end
  return hi + math.log(1 + 2 ^ (lo - hi)) / LN2
end

local scores = p .. 'score'
local counts = p .. 'count'
local windows = {}
for _, e in ipairs(b.events) do
  local query, spelled, user, at = e[1], e[2], e[3], e[6]
  local h = p .. 'q:' .. query
  local scored = true
  if user ~= '' then
    local caps = p .. 'cap:' .. e[4]
    local n = redis.call('HINCRBY', caps, user .. '\31' .. query, 1)
    if not windows[e[4]] then
      redis.call('ZADD', p .. 'capw', e[4], e[4])
      windows[e[4]] = true
    end
    scored = n <= b.user_cap
  end
  local count = tonumber(redis.call('ZINCRBY', counts, 1, query))
  local state = redis.call('HMGET', h, 'd', 'dn', 'l', 'ls', 's:' .. spelled)
  local display, shown, last, log_score = state[1], tonumber(state[2] or '0'), state[3], state[4]
  local n = tonumber(state[5] or '0') + 1
  local fields = { 's:' .. spelled, n }
  if not display then
    fields[#fields + 1] = 'd'; fields[#fields + 1] = spelled
    fields[#fields + 1] = 'dn'; fields[#fields + 1] = n
  elseif display == spelled then
    fields[#fields + 1] = 'dn'; fields[#fields + 1] = n
  elseif n > shown then
    fields[#fields + 1] = 'd'; fields[#fields + 1] = spelled
    fields[#fields + 1] = 'dn'; fields[#fields + 1] = n
  end
  if count == 1 or (not last) or at >= tonumber(last) then
    fields[#fields + 1] = 'l'; fields[#fields + 1] = string.format('%d', at)
    fields[#fields + 1] = 'b'; fields[#fields + 1] = e[7]
  end
  if scored then
    local new = string.format('%.17g', log2_add(log_score and tonumber(log_score), e[5]))
    fields[#fields + 1] = 'ls'; fields[#fields + 1] = new
    redis.call('ZADD', scores, new, query)
  elseif not log_score then
    fields[#fields + 1] = 'ls'; fields[#fields + 1] = '-inf'
    redis.call('ZADD', scores, '-inf', query)
  end
  redis.call('HSET', h, unpack(fields))
end

-- Prune: decayed trends, then all but the best max_trends.
local function forget(members)
  for _, query in ipairs(members) do
    redis.call('ZREM', scores, query)
    redis.call('ZREM', counts, query)
    redis.call('DEL', p .. 'q:' .. query)
  end
end
forget(redis.call('ZRANGEBYSCORE', scores, '-inf', '(' .. string.format('%.17g', b.prune_below)))
if redis.call('ZCARD', scores) > b.max_trends then
  -- Keep the best max_trends, and whatever ties with the last of them.
  local last = redis.call('ZREVRANGE', scores, b.max_trends - 1, b.max_trends - 1, 'WITHSCORES')
  forget(redis.call('ZRANGEBYSCORE', scores, '-inf', '(' .. last[2]))
end

-- Cap counters: keep the newest window that has seen a search and the two before it.
local newest = redis.call('ZREVRANGE', p .. 'capw', 0, 0)[1]
if newest then
  local oldest = tonumber(newest) - 2
  for _, window in ipairs(redis.call('ZRANGEBYSCORE', p .. 'capw', '-inf', '(' .. oldest)) do
    redis.call('DEL', p .. 'cap:' .. window)
  end
  redis.call('ZREMRANGEBYSCORE', p .. 'capw', '-inf', '(' .. oldest)
end
return 'OK'
