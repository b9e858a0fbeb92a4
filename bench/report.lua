-- wrk script for bench/run.sh: prints the run's totals as one machine-readable line after
-- wrk's own --latency report. No request() or response() hook, so wrk stays on its fast path.

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d " ..
      "max_us=%d err_status=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
