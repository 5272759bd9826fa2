-- Applies one batch of search events to the trends, atomically, with the consumed positions.
-- The rules are those of bookstore_domain::trends (see there); this is their Redis twin.
--
-- ARGV[1]: the key prefix. ARGV[2]: the batch as JSON:
--   group, positions = [[partition key, from or -1, to]], events = in log order, each a search
--   [query_normalized, spelling, reader or "", cap window, log weight, occurred_at ms, books JSON,
--   origin or ""] or a view {v = [book id, reader or "", cap window, log weight, occurred_at ms,
--   title, author, origin or ""]} or a user id to forget (reader.forgotten), user_cap, prune_below, max_trends,
--   min_readers, max_spellings, client_cap.
-- Keys: <p>score (zset, log2 score), <p>count (zset, all-time count), <p>pscore and <p>pcount
-- (the same for public trends only), <p>q:<query> (hash: d display, dn its count, l last search
-- ms, b books JSON, ls log2 score, pub 1 once public, s:<spelling> counts, at most
-- max_spellings of them), <p>r:<query> (set: the origins of a trend not public yet, at most
-- min_readers), <p>rq:<origin> (set: the queries whose r: holds the origin; an index kept with
-- them, so that forgetting a reader reads only theirs), <p>cap:<window>:<who> (hash: query ->
-- searches, the counters of a reader, or of an origin when who is \1 origin), <p>capr:<window>
-- (set: the whos with counters in the window), <p>capw (zset of the windows with counters),
-- <p>vscore (zset: viewed book id -> log2 score), <p>v:<id> (hash: t title, a author, n views, l
-- last view ms, ls log2 score); a view's cap counters are fields \2<id> of the same cap: hashes
-- as a search's query, so they are pruned and forgotten with them.
-- <p>pos:<group> (hash: partition -> next offset), <p>layout (the version of this layout). A
-- handful of commands per event, and per batch one ZADD per sorted set and 500 trends; the only
-- whole read is of one trend's hash (a bounded number of fields) when a new spelling replaces
-- another. Forgetting a reader deletes two hashes per window kept (at most three, plus those a
-- catching-up batch adds) and reads their rq: set (at most one member per trend kept).
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

local capw = p .. 'capw'
-- The counters of `who` in `window`, and the set of the whos with counters in it.
local function cap_key(window, who) return p .. 'cap:' .. window .. ':' .. who end
local function cap_whos(window) return p .. 'capr:' .. window end
local function origin_queries(origin) return p .. 'rq:' .. origin end

-- Forgets who searched `query` while it was not public (it turned public, or is pruned).
local function drop_readers(query)
  local readers = p .. 'r:' .. query
  for _, origin in ipairs(redis.call('SMEMBERS', readers)) do
    redis.call('SREM', origin_queries(origin), query)
  end
  redis.call('DEL', readers)
end

-- DEL of many keys, 1000 at a time.
local function del_all(keys)
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
end

-- Layout 2, once, on the first batch after an upgrade: the counters of a window were one hash
-- (cap:<window>, fields who \31 query) and the origins of trends had no rq: index.
if redis.call('GET', p .. 'layout') ~= '2' then
  for _, window in ipairs(redis.call('ZRANGE', capw, 0, -1)) do
    local legacy = p .. 'cap:' .. window
    local fields = redis.call('HGETALL', legacy)
    for i = 1, #fields, 2 do
      local cut = string.find(fields[i], '\31', 1, true)
      if cut and cut > 1 then
        local who = string.sub(fields[i], 1, cut - 1)
        redis.call('HINCRBY', cap_key(window, who), string.sub(fields[i], cut + 1), fields[i + 1])
        redis.call('SADD', cap_whos(window), who)
      end
    end
    redis.call('DEL', legacy)
  end
  for _, query in ipairs(redis.call('ZRANGE', p .. 'score', 0, -1)) do
    for _, origin in ipairs(redis.call('SMEMBERS', p .. 'r:' .. query)) do
      redis.call('SADD', origin_queries(origin), query)
    end
  end
  redis.call('SET', p .. 'layout', '2')
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

-- reader.forgotten: the user's counters, as reader and as the origin of their searches without a
-- client, in every window kept, and their place among the origins of trends not public yet
-- (bookstore_domain::trends::TrendBoard::forget). Counts and scores stay.
local function forget_reader(user)
  local owners = { user, '\1' .. user }
  for _, window in ipairs(redis.call('ZRANGE', capw, 0, -1)) do
    redis.call('DEL', cap_key(window, owners[1]), cap_key(window, owners[2]))
    redis.call('SREM', cap_whos(window), owners[1], owners[2])
  end
  local index = origin_queries(user)
  for _, query in ipairs(redis.call('SMEMBERS', index)) do
    redis.call('SREM', p .. 'r:' .. query, user)
  end
  redis.call('DEL', index)
end

local function search(e)
  local query, spelled, reader, at, origin = e[1], e[2], e[3], e[6], e[8]
  local h = p .. 'q:' .. query
  local scored = true
  -- The reader's counter (user_cap) and the origin's (client_cap, its key marked by \1).
  local counters = { { reader, b.user_cap } }
  if origin ~= '' then counters[2] = { '\1' .. origin, b.client_cap } end
  for _, who in ipairs(counters) do
    if who[1] ~= '' then
      local n = redis.call('HINCRBY', cap_key(e[4], who[1]), query, 1)
      if n == 1 then redis.call('SADD', cap_whos(e[4]), who[1]) end
      if not windows[e[4]] then
        redis.call('ZADD', capw, e[4], e[4])
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
      local added = redis.call('SADD', readers, origin)
      if added == 1 then redis.call('SADD', origin_queries(origin), query) end
      seen = seen + added
    end
    if seen >= b.min_readers then
      public = true
      drop_readers(query)
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

-- One view (bookstore_domain::trends::TrendBoard::apply_view): the search's caps, per book.
local vscores = p .. 'vscore'
local vtouched, vlatest = {}, {}
local function view(e)
  local id, reader, window, at, origin = e[1], e[2], e[3], e[5], e[8]
  local subject = '\2' .. id
  local scored = true
  local counters = { { reader, b.user_cap } }
  if origin ~= '' then counters[2] = { '\1' .. origin, b.client_cap } end
  for _, who in ipairs(counters) do
    if who[1] ~= '' then
      local n = redis.call('HINCRBY', cap_key(window, who[1]), subject, 1)
      if n == 1 then redis.call('SADD', cap_whos(window), who[1]) end
      if not windows[window] then
        redis.call('ZADD', capw, window, window)
        windows[window] = true
      end
      scored = scored and n <= who[2]
    end
  end
  local h = p .. 'v:' .. id
  local views = redis.call('HINCRBY', h, 'n', 1)
  local state = redis.call('HMGET', h, 'l', 'ls')
  local last, log_score = state[1], state[2]
  local fields = {}
  if views == 1 or (not last) or at >= tonumber(last) then
    fields[#fields + 1] = 'l'; fields[#fields + 1] = string.format('%d', at)
    fields[#fields + 1] = 't'; fields[#fields + 1] = e[6]
    fields[#fields + 1] = 'a'; fields[#fields + 1] = e[7]
  end
  if scored then
    log_score = string.format('%.17g', log2_add(log_score and tonumber(log_score), e[4]))
    fields[#fields + 1] = 'ls'; fields[#fields + 1] = log_score
  elseif not log_score then
    log_score = '-inf'
    fields[#fields + 1] = 'ls'; fields[#fields + 1] = log_score
  end
  if #fields > 0 then redis.call('HSET', h, unpack(fields)) end
  if not vlatest[id] then vtouched[#vtouched + 1] = id end
  vlatest[id] = log_score
end

for _, e in ipairs(b.events) do
  if type(e) == 'string' then forget_reader(e) elseif e.v then view(e.v) else search(e) end
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
local viewed_scores = {}
for _, id in ipairs(vtouched) do
  viewed_scores[#viewed_scores + 1] = vlatest[id]; viewed_scores[#viewed_scores + 1] = id
end
zadd(vscores, viewed_scores)

-- Prune: decayed trends, then all but the best max_trends.
local function forget(members)
  for _, query in ipairs(members) do
    redis.call('ZREM', scores, query)
    redis.call('ZREM', counts, query)
    redis.call('ZREM', pscores, query)
    redis.call('ZREM', pcounts, query)
    redis.call('DEL', p .. 'q:' .. query)
    drop_readers(query)
  end
end
forget(redis.call('ZRANGEBYSCORE', scores, '-inf', '(' .. string.format('%.17g', b.prune_below)))
if redis.call('ZCARD', scores) > b.max_trends then
  -- Keep the best max_trends, and whatever ties with the last of them.
  local last = redis.call('ZREVRANGE', scores, b.max_trends - 1, b.max_trends - 1, 'WITHSCORES')
  forget(redis.call('ZRANGEBYSCORE', scores, '-inf', '(' .. last[2]))
end

-- Viewed books, by the same rules, cut separately.
local function forget_viewed(members)
  for _, id in ipairs(members) do
    redis.call('ZREM', vscores, id)
    redis.call('DEL', p .. 'v:' .. id)
  end
end
forget_viewed(redis.call('ZRANGEBYSCORE', vscores, '-inf', '(' .. string.format('%.17g', b.prune_below)))
if redis.call('ZCARD', vscores) > b.max_trends then
  local last = redis.call('ZREVRANGE', vscores, b.max_trends - 1, b.max_trends - 1, 'WITHSCORES')
  forget_viewed(redis.call('ZRANGEBYSCORE', vscores, '-inf', '(' .. last[2]))
end

-- Cap counters: keep the newest window that has seen a search and the two before it.
local newest = redis.call('ZREVRANGE', capw, 0, 0)[1]
if newest then
  local oldest = tonumber(newest) - 2
  for _, window in ipairs(redis.call('ZRANGEBYSCORE', capw, '-inf', '(' .. oldest)) do
    local keys = {}
    for _, who in ipairs(redis.call('SMEMBERS', cap_whos(window))) do
      keys[#keys + 1] = cap_key(window, who)
    end
    del_all(keys)
    -- With the window's hash of the layout before 2, should an older consumer have written one.
    redis.call('DEL', cap_whos(window), p .. 'cap:' .. window)
  end
  redis.call('ZREMRANGEBYSCORE', capw, '-inf', '(' .. oldest)
end
return 'OK'
