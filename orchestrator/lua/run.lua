-- Every state change of one run, each an atomic operation named by ARGV[1].
-- KEYS (orchestrator/keys.py, run_script_keys): the run's meta, agents, order, outcomes,
-- attempts, aggregate and done keys, then the shared leases and deadlines sorted sets,
-- then the lease key of the agent the operation is about; `submit` adds the queue of each
-- of its spawn messages after those.
local META, AGENTS, ORDER, OUTCOMES, ATTEMPTS, AGGREGATE, DONE = 1, 2, 3, 4, 5, 6, 7
local LEASES, DEADLINES, LEASE, QUEUES = 8, 9, 10, 11
local CHUNK = 500

local function meta(field)
  return redis.call('HGET', KEYS[META], field)
end

local function run_exists()
  return redis.call('EXISTS', KEYS[META]) == 1
end

local function set_ttl(seconds)
  for i = META, DONE do
    redis.call('EXPIRE', KEYS[i], seconds)
  end
end

local function run_status(failed, total, forced)
  if forced ~= '' then return forced end
  if failed == 0 then return 'succeeded' end
  if failed == total then return 'failed' end
  return 'partial'
end

local function run_message(status, failed, total)
  if status == 'succeeded' then return 'all ' .. total .. ' agents succeeded' end
  if status == 'cancelled' then
    return 'run cancelled: ' .. failed .. '/' .. total .. ' agents failed or cancelled'
  end
  return failed .. '/' .. total .. ' agents failed'
end

-- Outcomes are stored as JSON; inside a JSON string every quote is escaped, so this
-- key/value pair can only be the outcome's own top-level status.
local function is_failed(outcome)
  return string.find(outcome, '"status":"failed"', 1, true) ~= nil
end

local function split_outcomes()
  local names = redis.call('LRANGE', KEYS[ORDER], 0, -1)
  local good, bad = {}, {}
  for i = 1, #names, CHUNK do
    local values = redis.call('HMGET', KEYS[OUTCOMES], unpack(names, i, math.min(i + CHUNK - 1, #names)))
    for _, outcome in ipairs(values) do
      if is_failed(outcome) then bad[#bad + 1] = outcome else good[#good + 1] = outcome end
    end
  end
  return good, bad
end

local function usage_json()
  local tokens = redis.call('HMGET', KEYS[META], 'in_tok', 'out_tok', 'cr_tok', 'cc_tok')
  return '{"input_tokens":' .. (tokens[1] or 0) .. ',"output_tokens":' .. (tokens[2] or 0)
    .. ',"cache_read_tokens":' .. (tokens[3] or 0)
    .. ',"cache_creation_tokens":' .. (tokens[4] or 0) .. '}'
end

-- The aggregate is assembled from stored JSON fragments so outcomes keep their exact
-- bytes; it is written in the same atomic step that settles the last outcome.
local function write_aggregate(now_iso, forced)
  local total = tonumber(meta('total'))
  local failed = tonumber(meta('failed'))
  local status = run_status(failed, total, forced)
  local good, bad = split_outcomes()
  local doc = '{"run_id":' .. cjson.encode(meta('run_id'))
    .. ',"status":"' .. status .. '","message":' .. cjson.encode(run_message(status, failed, total))
    .. ',"total":' .. total .. ',"succeeded_count":' .. (total - failed)
    .. ',"failed_count":' .. failed
    .. ',"submitted_at":' .. cjson.encode(meta('submitted_at'))
    .. ',"finished_at":' .. cjson.encode(now_iso)
    .. ',"labels":' .. meta('labels') .. ',"usage":' .. usage_json()
    .. ',"cost_usd":' .. (meta('cost') or '0')
    .. ',"successful":[' .. table.concat(good, ',') .. ']'
    .. ',"failed":[' .. table.concat(bad, ',') .. ']}'

  redis.call('SET', KEYS[AGGREGATE], doc)
  redis.call('HSET', KEYS[META], 'state', 'done', 'status', status, 'finished_at', now_iso)
  redis.call('LPUSH', KEYS[DONE], status)
  set_ttl(tonumber(meta('ttl')))
  redis.call('ZREM', KEYS[DEADLINES], meta('run_id'))
  return 'complete'
end

local function record(name, outcome, failed, usage)
  if redis.call('HSETNX', KEYS[OUTCOMES], name, outcome) == 0 then return false end
  redis.call('HINCRBY', KEYS[META], 'settled', 1)
  if failed then redis.call('HINCRBY', KEYS[META], 'failed', 1) end
  if usage then
    redis.call('HINCRBY', KEYS[META], 'in_tok', usage[1])
    redis.call('HINCRBY', KEYS[META], 'out_tok', usage[2])
    redis.call('HINCRBY', KEYS[META], 'cr_tok', usage[3])
    redis.call('HINCRBY', KEYS[META], 'cc_tok', usage[4])
    redis.call('HINCRBYFLOAT', KEYS[META], 'cost', usage[5])
  end
  return true
end

local function forced_outcome(name, kind, message)
  local spec = cjson.decode(redis.call('HGET', KEYS[AGENTS], name))
  return cjson.encode({
    name = name, platform = spec['platform'], status = 'failed', output = '',
    error = {kind = kind, message = message},
    attempts = tonumber(redis.call('HGET', KEYS[ATTEMPTS], name)) or 0,
  })
end

local function complete_if_settled(now_iso)
  if tonumber(meta('settled')) == tonumber(meta('total')) then
    return write_aggregate(now_iso, '')
  end
  return 'settled'
end

local ops = {}

-- ARGV: run_id, total, submitted_at, deadline_ms, labels_json, run_json, keys_ttl_s,
-- ttl_s, then agent name and agent JSON pairs in spec order, then the spawn messages,
-- each pushed onto its queue (KEYS from QUEUES on, in the same order): state and messages
-- are written together or not at all.
function ops.submit()
  if run_exists() then return 0 end
  local run_id, total = ARGV[2], tonumber(ARGV[3])
  redis.call('HSET', KEYS[META], 'run_id', run_id, 'total', total, 'settled', 0,
    'failed', 0, 'state', 'open', 'submitted_at', ARGV[4], 'deadline_ms', ARGV[5],
    'labels', ARGV[6], 'run', ARGV[7], 'ttl', ARGV[9])
  local first, messages = 10, 10 + 2 * total
  for i = first, messages - 1, 2 * CHUNK do
    local last = math.min(i + 2 * CHUNK - 1, messages - 1)
    local names = {}
    for j = i, last, 2 do names[#names + 1] = ARGV[j] end
    redis.call('RPUSH', KEYS[ORDER], unpack(names))
    redis.call('HSET', KEYS[AGENTS], unpack(ARGV, i, last))
  end
  set_ttl(tonumber(ARGV[8]))
  redis.call('ZADD', KEYS[DEADLINES], ARGV[5], run_id)
  for i = QUEUES, #KEYS do
    redis.call('LPUSH', KEYS[i], ARGV[messages + i - QUEUES])
  end
  return 1
end

-- ARGV: name, attempt, token, ttl_ms, now_ms, member
function ops.lease()
  local name, attempt, token = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  if not run_exists() then return {'gone'} end
  -- A forged or corrupt message naming no agent of the run changes nothing.
  if redis.call('HEXISTS', KEYS[AGENTS], name) == 0 then return {'unknown'} end
  if redis.call('HEXISTS', KEYS[OUTCOMES], name) == 1 then return {'settled'} end
  local current = tonumber(redis.call('HGET', KEYS[ATTEMPTS], name)) or 1
  if attempt < current then return {'stale'} end
  local holder = redis.call('GET', KEYS[LEASE])
  if holder and holder ~= token then return {'busy'} end

  redis.call('SET', KEYS[LEASE], token, 'PX', ARGV[5])
  redis.call('ZADD', KEYS[LEASES], tonumber(ARGV[6]) + tonumber(ARGV[5]), ARGV[7])
  redis.call('HSET', KEYS[ATTEMPTS], name, attempt)
  return {'ok', redis.call('HGET', KEYS[AGENTS], name), meta('run')}
end

-- ARGV: name, attempt, token, ttl_ms, now_ms, member
function ops.renew()
  local name, attempt, token = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  if not run_exists() then return 'gone' end
  if redis.call('HEXISTS', KEYS[OUTCOMES], name) == 1 then return 'settled' end
  local holder = redis.call('GET', KEYS[LEASE])
  if holder and holder ~= token then return 'lost' end
  -- An expired lease (Redis paused longer than the TTL) is taken back only while no
  -- newer attempt was scheduled, so two copies never both hold it.
  if not holder and tonumber(redis.call('HGET', KEYS[ATTEMPTS], name)) ~= attempt then
    return 'lost'
  end

  redis.call('SET', KEYS[LEASE], token, 'PX', ARGV[5])
  redis.call('ZADD', KEYS[LEASES], tonumber(ARGV[6]) + tonumber(ARGV[5]), ARGV[7])
  return 'ok'
end

-- ARGV: name, outcome_json, failed (0|1), token, now_iso, member, then five usage numbers
-- (input, output, cache read and cache creation tokens, cost) or none.
function ops.settle()
  local name, token = ARGV[2], ARGV[5]
  if not run_exists() then return 'gone' end
  redis.call('ZREM', KEYS[LEASES], ARGV[7])
  if token ~= '' then
    local holder = redis.call('GET', KEYS[LEASE])
    -- A copy whose lease passed to a newer attempt (or another holder) was killed or is
    -- about to be: what it reports is not the agent's outcome.
    local mine = tonumber(string.match(ARGV[7], '\n(%d+)\n[^\n]*$'))
    local current = tonumber(redis.call('HGET', KEYS[ATTEMPTS], name)) or 1
    if (holder and holder ~= token) or (mine and mine < current) then return 'stale' end
    if holder == token then redis.call('DEL', KEYS[LEASE]) end
  end

  local usage = nil
  if #ARGV >= 12 then usage = {ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]} end
  if not record(name, ARGV[3], ARGV[4] == '1', usage) then return 'duplicate' end
  return complete_if_settled(ARGV[6])
end

-- ARGV: kind, message, now_iso, forced run status ('' or 'cancelled')
function ops.finalize()
  if not run_exists() then return 'gone' end
  if meta('state') == 'done' then return 'done' end
  local names = redis.call('LRANGE', KEYS[ORDER], 0, -1)
  for _, name in ipairs(names) do
    if redis.call('HEXISTS', KEYS[OUTCOMES], name) == 0 then
      record(name, forced_outcome(name, ARGV[2], ARGV[3]), true, nil)
    end
  end
  return write_aggregate(ARGV[4], ARGV[5])
end

-- An expired lease: schedule the next attempt, or settle worker_lost past the cap.
-- ARGV: name, attempt, max_attempts, now_iso, now_ms, member
function ops.requeue()
  local name, attempt = ARGV[2], tonumber(ARGV[3])
  if not run_exists() then return {'gone'} end
  if redis.call('HEXISTS', KEYS[OUTCOMES], name) == 1 then return {'settled'} end
  local ttl_ms = redis.call('PTTL', KEYS[LEASE])
  if ttl_ms > 0 then
    redis.call('ZADD', KEYS[LEASES], tonumber(ARGV[6]) + ttl_ms, ARGV[7])
    return {'alive'}
  end
  local current = tonumber(redis.call('HGET', KEYS[ATTEMPTS], name)) or 1
  local spec = cjson.decode(redis.call('HGET', KEYS[AGENTS], name))
  if attempt < current then
    -- A newer attempt was scheduled and holds no lease: the reaper that scheduled it may
    -- have died before publishing it. Publishing it again is harmless (leases dedupe).
    return {'requeue', spec['platform'], tostring(current)}
  end

  if current >= tonumber(ARGV[4]) then
    local message = 'worker lost on attempt ' .. current .. ' of ' .. ARGV[4]
    record(name, forced_outcome(name, 'worker_lost', message), true, nil)
    return {'lost', complete_if_settled(ARGV[5])}
  end
  redis.call('HSET', KEYS[ATTEMPTS], name, current + 1)
  return {'requeue', spec['platform'], tostring(current + 1)}
end

local op = ops[ARGV[1]]
if not op then return redis.error_reply('unknown run operation ' .. tostring(ARGV[1])) end
return op()
