-- Applies one batch of search events to the trends, atomically, with the consumed positions.
-- The rules are those of bookstore_domain::trends (see there); this is their Redis twin.
--
-- ARGV[1]: the key prefix. ARGV[2]: the batch as JSON:
--   group, positions = [[partition key, from or -1, to]], events = [[query_normalized, spelling,
--   user or "", cap window, log weight, occurred_at ms, books JSON]], user_cap, cap_ttl_ms,
--   prune_below, max_trends.
-- Keys: <p>score (zset, log2 score), <p>count (zset, all-time count), <p>q:<query> (hash:
-- display, last, books), <p>sp:<query> (hash: spelling -> count), <p>cap:<window> (hash:
-- user \31 query -> searches), <p>pos:<group> (hash: partition -> next offset).
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
for _, e in ipairs(b.events) do
  local query, spelled, user = e[1], e[2], e[3]
  local h = p .. 'q:' .. query
  local scored = true
  if user ~= '' then
    local caps = p .. 'cap:' .. e[4]
    local n = redis.call('HINCRBY', caps, user .. '\31' .. query, 1)
    redis.call('PEXPIRE', caps, b.cap_ttl_ms)
    scored = n <= b.user_cap
  end
  local first = redis.call('ZSCORE', counts, query) == false
  redis.call('ZINCRBY', counts, 1, query)
  local sp = p .. 'sp:' .. query
  local n = redis.call('HINCRBY', sp, spelled, 1)
  local display = redis.call('HGET', h, 'display')
  if not display then
    redis.call('HSET', h, 'display', spelled)
  elseif display ~= spelled then
    local shown = tonumber(redis.call('HGET', sp, display) or '0')
    if n > shown then redis.call('HSET', h, 'display', spelled) end
  end
  local last = redis.call('HGET', h, 'last')
  if first or (not last) or e[6] >= tonumber(last) then
    redis.call('HSET', h, 'last', string.format('%d', e[6]), 'books', e[7])
  end
  local current = redis.call('ZSCORE', scores, query)
  if scored then
    local new = log2_add(current and tonumber(current), e[5])
    redis.call('ZADD', scores, string.format('%.17g', new), query)
  elseif not current then
    redis.call('ZADD', scores, '-inf', query)
  end
end

-- Prune: decayed trends, then all but the best max_trends.
local function forget(members)
  for _, query in ipairs(members) do
    redis.call('ZREM', scores, query)
    redis.call('ZREM', counts, query)
    redis.call('DEL', p .. 'q:' .. query, p .. 'sp:' .. query)
  end
end
forget(redis.call('ZRANGEBYSCORE', scores, '-inf', '(' .. string.format('%.17g', b.prune_below)))
local extra = redis.call('ZCARD', scores) - b.max_trends
if extra > 0 then
  forget(redis.call('ZRANGE', scores, 0, extra - 1))
end
return 'OK'
