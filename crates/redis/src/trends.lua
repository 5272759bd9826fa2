-- Applies one batch of search events to the trends, atomically, with the consumed positions.
-- The rules are those of bookstore_domain::trends (see there); this is their Redis twin.
--
-- ARGV[1]: the key prefix. ARGV[2]: the batch as JSON:
--   group, positions = [[partition key, from or -1, to]], events = [[query_normalized, spelling,
--   reader or "", cap window, log weight, occurred_at ms, books JSON, origin or ""]], user_cap,
--   prune_below, max_trends, min_readers, max_spellings, client_cap.
-- Keys: <p>score (zset, log2 score), <p>count (zset, all-time count), <p>pscore and <p>pcount
-- (the same for public trends only), <p>q:<query> (hash: d display, dn its count, l last search
-- ms, b books JSON, ls log2 score, pub 1 once public, s:<spelling> counts, at most
-- max_spellings of them), <p>r:<query> (set: the origins of a trend not public yet, at most
-- min_readers), <p>cap:<window> (hash: reader \31 query, and \1 origin \31 query -> searches), <p>capw (zset of the
-- windows with counters), <p>pos:<group> (hash: partition -> next offset). A handful of commands
-- per event, and per batch one ZADD per sorted set and 500 trends; the only whole read is of one trend's hash (a bounded number of fields) when a new
-- spelling replaces another.
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

-- Whether a sorts after b byte by byte, as Rust orders strings (Lua's `>` follows the server's
-- collation locale).
local function bytes_after(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- The spelling a new one replaces: the least common, ties towards the greatest in byte order,
-- never the one shown (bookstore_domain::trends::least_common_spelling).
local function least_common(h, shown)
  local all = redis.call('HGETALL', h)
  local victim, victim_n, count = nil, nil, 0
  for i = 1, #all, 2 do
    local field = all[i]
    if string.sub(field, 1, 2) == 's:' then
      count = count + 1
      local spelling, n = string.sub(field, 3), tonumber(all[i + 1])
      if spelling ~= shown then
        if (not victim) or n < victim_n or (n == victim_n and bytes_after(spelling, victim)) then
          victim, victim_n = spelling, n
        end
      end
    end
  end
  return victim, count
end

local scores = p .. 'score'
local counts = p .. 'count'
local pscores = p .. 'pscore'
local pcounts = p .. 'pcount'
local windows = {}
-- Each touched trend's score and count (and whether public) as the batch leaves them: the
-- sorted sets get one ZADD per trend at the end rather than one per event.
local touched, latest = {}, {}
for _, e in ipairs(b.events) do
  local query, spelled, reader, at, origin = e[1], e[2], e[3], e[6], e[8]
  local h = p .. 'q:' .. query
  local scored = true
  -- The reader's counter (user_cap) and the origin's (client_cap, its key marked by \1).
  local counters = { { reader, b.user_cap } }
  if origin ~= '' then counters[2] = { '\1' .. origin, b.client_cap } end
  for _, who in ipairs(counters) do
    if who[1] ~= '' then
      local caps = p .. 'cap:' .. e[4]
      local n = redis.call('HINCRBY', caps, who[1] .. '\31' .. query, 1)
      if not windows[e[4]] then
        redis.call('ZADD', p .. 'capw', e[4], e[4])
        windows[e[4]] = true
      end
      scored = scored and n <= who[2]
    end
  end
  local count = tonumber(redis.call('ZINCRBY', counts, 1, query))
  local state = redis.call('HMGET', h, 'd', 'dn', 'l', 'ls', 's:' .. spelled, 'pub')
  local display, shown, last, log_score = state[1], tonumber(state[2] or '0'), state[3], state[4]
  local public = state[6] == '1'
  local n = 1
  if state[5] then
    n = tonumber(state[5]) + 1
  elseif display then
    -- A new spelling: make room among the trend's few.
    local victim, spellings = least_common(h, display)
    while victim and spellings >= b.max_spellings do
      redis.call('HDEL', h, 's:' .. victim)
      victim, spellings = least_common(h, display)
    end
  end
  local fields = { 's:' .. spelled, n }
  -- Origins: the trend turns public once min_readers distinct ones searched it.
  if not public then
    local readers = p .. 'r:' .. query
    local seen = redis.call('SCARD', readers)
    if origin ~= '' and seen < b.min_readers then
      seen = seen + redis.call('SADD', readers, origin)
    end
    if seen >= b.min_readers then
      public = true
      redis.call('DEL', readers)
      fields[#fields + 1] = 'pub'; fields[#fields + 1] = '1'
    end
  end
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
    log_score = string.format('%.17g', log2_add(log_score and tonumber(log_score), e[5]))
    fields[#fields + 1] = 'ls'; fields[#fields + 1] = log_score
  elseif not log_score then
    log_score = '-inf'
    fields[#fields + 1] = 'ls'; fields[#fields + 1] = log_score
  end
  if not latest[query] then touched[#touched + 1] = query end
  latest[query] = { log_score, count, public }
  redis.call('HSET', h, unpack(fields))
end

-- The sorted sets, up to 500 members per ZADD.
local function zadd(key, members)
  for i = 1, #members, 1000 do
    redis.call('ZADD', key, unpack(members, i, math.min(i + 999, #members)))
  end
end
local all_scores, public_scores, public_counts = {}, {}, {}
for _, query in ipairs(touched) do
  local t = latest[query]
  all_scores[#all_scores + 1] = t[1]; all_scores[#all_scores + 1] = query
  if t[3] then
    public_scores[#public_scores + 1] = t[1]; public_scores[#public_scores + 1] = query
    public_counts[#public_counts + 1] = t[2]; public_counts[#public_counts + 1] = query
  end
end
zadd(scores, all_scores)
zadd(pscores, public_scores)
zadd(pcounts, public_counts)

-- Prune: decayed trends, then all but the best max_trends.
local function forget(members)
  for _, query in ipairs(members) do
    redis.call('ZREM', scores, query)
    redis.call('ZREM', counts, query)
    redis.call('ZREM', pscores, query)
    redis.call('ZREM', pcounts, query)
    redis.call('DEL', p .. 'q:' .. query, p .. 'r:' .. query)
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
