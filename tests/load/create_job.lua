-- wrk script for tests/load/run.sh: every request creates a small job
-- (import/base64 → export/url) with POST /v2/process/jobs. The Authorization header
-- comes from wrk's command line (-H).
--
-- Each wrk thread has its own Lua state, so the counters below are per thread; setup()
-- (main thread) keeps a handle on every thread and done() (main thread, after the run)
-- adds them up with thread:get(), the pattern of wrk's scripts/setup.lua.
--
-- done() prints a human summary block and one machine-readable line for run.sh:
--   LOADSTATS sent=N responses=N s201=N s429=N s4xx=N s5xx=N other=N ...

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local body = '{"tasks": {"in": {"operation": "import/base64", "file": "aGVsbG8gd29ybGQ=", '
   .. '"filename": "hello.txt"}, "out": {"operation": "export/url", "input": "in"}}}'

local req

function init(args)
   sent, responses = 0, 0
   count201, count429, count4xx, count5xx, countother = 0, 0, 0, 0, 0
   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
   req = wrk.format()
end

-- Defined (rather than left to wrk's static request) only to count what is sent: a job
-- whose request got no answer before wrk stopped may still have been created.
function request()
   sent = sent + 1
   return req
end

function response(status, headers, body)
   responses = responses + 1
   if status == 201 then
      count201 = count201 + 1
   elseif status == 429 then
      count429 = count429 + 1
   elseif status >= 400 and status < 500 then
      count4xx = count4xx + 1
   elseif status >= 500 then
      count5xx = count5xx + 1
   else
      countother = countother + 1
   end
end

function done(summary, latency, requests)
   local t = { sent = 0, responses = 0, s201 = 0, s429 = 0, s4xx = 0, s5xx = 0, other = 0 }
   for _, thread in ipairs(threads) do
      t.sent = t.sent + thread:get("sent")
      t.responses = t.responses + thread:get("responses")
      t.s201 = t.s201 + thread:get("count201")
      t.s429 = t.s429 + thread:get("count429")
      t.s4xx = t.s4xx + thread:get("count4xx")
      t.s5xx = t.s5xx + thread:get("count5xx")
      t.other = t.other + thread:get("countother")
   end
   local secs = summary.duration / 1e6
   local rps = summary.requests / secs
   local ms = function(us) return us / 1000 end
   local p50, p90 = ms(latency:percentile(50)), ms(latency:percentile(90))
   local p99, p999 = ms(latency:percentile(99)), ms(latency:percentile(99.9))
   local e = summary.errors

   io.write("------------------------------------------------------------\n")
   io.write(string.format("load summary (%.1f s, %d threads)\n", secs, #threads))
   io.write(string.format("  requests/s   %10.1f   (%d responses)\n", rps, summary.requests))
   io.write(string.format("  latency ms   p50 %.2f   p90 %.2f   p99 %.2f   p99.9 %.2f   max %.2f\n",
      p50, p90, p99, p999, ms(latency.max)))
   io.write(string.format("  status       201 %d   429 %d   other 4xx %d   5xx %d   other %d\n",
      t.s201, t.s429, t.s4xx, t.s5xx, t.other))
   io.write(string.format("  socket       connect %d   read %d   write %d   timeout %d\n",
      e.connect, e.read, e.write, e.timeout))
   io.write(string.format("  unanswered   %d (requests written without a response before wrk stopped, at most)\n",
      t.sent - t.responses))
   io.write("------------------------------------------------------------\n")
   io.write(string.format(
      "LOADSTATS sent=%d responses=%d s201=%d s429=%d s4xx=%d s5xx=%d other=%d "
         .. "secs=%.3f rps=%.1f p50=%.2f p90=%.2f p99=%.2f p999=%.2f "
         .. "connect=%d read=%d write=%d timeout=%d\n",
      t.sent, t.responses, t.s201, t.s429, t.s4xx, t.s5xx, t.other,
      secs, rps, p50, p90, p99, p999, e.connect, e.read, e.write, e.timeout))
end
