-- wrk script for bench/verify.sh. With TOKENS set (a file of tokens, one a line), every request
-- carries the next token of the file, so that each is verified anew; without it, wrk's own -H
-- header is sent. Prints the run's totals as one line.

local tokens = nil
local file = os.getenv("TOKENS")
if file and file ~= "" then
   tokens = {}
   for line in io.lines(file) do tokens[#tokens + 1] = line end
   local i = 0
   request = function()
      i = i % #tokens + 1
      return wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. tokens[i] })
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.status + e.connect + e.read + e.write + e.timeout))
end
