-- wrk script for make bench: POST one OpenAI chat completion per request.
--
-- Environment (set by bench/run.sh):
--   BENCH_STREAM=1      ask for a stream ("stream": true, usage included)
--   BENCH_CACHEABLE=1   "temperature": 0: Spendpol's cache answers every
--                       request after the first (the "hit" kind)
--   BENCH_AUTH          value of the Authorization header
--   BENCH_HEADERS       extra headers, "Name: value" separated by "|"
--   BENCH_PATH          request path (default /v1/chat/completions)
--   BENCH_PROMPT_BYTES  the user prompt's size (0: one short sentence)
-- done() prints one line that run.sh parses:
--   BENCH_RESULT requests=N duration_us=N rps=F p50_us=N p99_us=N
--                p999_us=N max_us=N non2xx=N connect=N read=N write=N
--                timeout=N

local stream = os.getenv("BENCH_STREAM") == "1"

-- BENCH_PROMPT_BYTES=N: a user prompt of N bytes of clean prose (the p2k
-- kind: what the PII scan and the prompt count cost on a real prompt)
local prompt = "Hello! Say hello back in one short sentence."
local want = tonumber(os.getenv("BENCH_PROMPT_BYTES") or "0") or 0
if want > 0 then
  local prose = "Our quarterly planning meeting covered the roadmap for the "
    .. "next release, the hiring plan for the support team and the budget "
    .. "for cloud infrastructure. Please summarise the main decisions and "
    .. "list the open questions in a short paragraph. "
  prompt = ""
  while #prompt < want do prompt = prompt .. prose end
  prompt = string.sub(prompt, 1, want)
end

local body = '{"model":"gpt-4o-mini","messages":['
  .. '{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"' .. prompt .. '"}],'
  .. '"max_tokens":64'
if os.getenv("BENCH_CACHEABLE") == "1" then
  body = body .. ',"temperature":0'
end
if stream then
  body = body .. ',"stream":true,"stream_options":{"include_usage":true}'
end
body = body .. '}'

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["User-Agent"] = "OpenAI/Python 1.99.9"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local extra = os.getenv("BENCH_HEADERS") or ""
for h in string.gmatch(extra, "[^|]+") do
  local name, value = string.match(h, "^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
    "p999_us=%d max_us=%d non2xx=%d connect=%d read=%d write=%d " ..
    "timeout=%d\n",
    summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
