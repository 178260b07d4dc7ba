-- wrk script for the non-stream rows: a small chat completion POST, and one JSON line of results.
-- With WRK_SDK_HEADERS=1 in wrk's environment the request carries the headers the official openai-python
-- SDK sends (3.54, captured from its request), 17 in all where the plain request has 4.
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-not-a-real-key"
if os.getenv("WRK_SDK_HEADERS") == "1" then
  wrk.headers["Accept-Encoding"] = "gzip, deflate"
  wrk.headers["Connection"] = "keep-alive"
  wrk.headers["accept"] = "application/json"
  wrk.headers["user-agent"] = "OpenAI/Python 3.54.0"
  wrk.headers["x-stainless-lang"] = "python"
  wrk.headers["x-stainless-package-version"] = "3.54.0"
  wrk.headers["x-stainless-os"] = "Linux"
  wrk.headers["x-stainless-arch"] = "x64"
  wrk.headers["x-stainless-runtime"] = "CPython"
  wrk.headers["x-stainless-runtime-version"] = "3.12.1"
  wrk.headers["x-stainless-async"] = "false"
  wrk.headers["x-stainless-retry-count"] = "0"
  wrk.headers["x-stainless-read-timeout"] = "600"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
