-- wrk script for the non-stream rows: a small chat completion POST, and one JSON line of results.
-- With WRK_SDK_HEADERS=1 in wrk's environment the request carries the headers the official openai-python
-- SDK sends (3.54, captured from its request), 17 in all where the plain request has 4.
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-not-a-real-key"
local SDK_HEADERS = {
  {"Accept-Encoding", "gzip, deflate"}, {"Connection", "keep-alive"}, {"accept", "application/json"},
  {"user-agent", "OpenAI/Python 3.54.0"}, {"x-stainless-lang", "python"}, {"x-stainless-package-version", "3.54.0"},
  {"x-stainless-os", "Linux"}, {"x-stainless-arch", "x64"}, {"x-stainless-runtime", "CPython"},
  {"x-stainless-runtime-version", "3.12.1"}, {"x-stainless-async", "false"}, {"x-stainless-retry-count", "0"},
  {"x-stainless-read-timeout", "600"},
}
if os.getenv("WRK_SDK_HEADERS") == "1" then
  for _, header in ipairs(SDK_HEADERS) do
    wrk.headers[header[1]] = header[2]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
