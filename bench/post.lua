-- wrk script for bench/run.py: POST pre-signed Segment-style webhooks.
--
-- wrk's LuaJIT has no HMAC, so bench/run.py signs a pool of bodies beforehand and writes them
-- one per line as "<hex signature>\t<compact JSON body>". Each thread formats every request
-- once in init(); request() only hands back the next prebuilt string, which keeps the load
-- generator's per-request cost (on a CPU it shares with the broker) as small as wrk allows.
--
-- usage: wrk ... -s bench/post.lua URL -- BODIES_FILE keepalive|close
-- done() prints one line "BENCH_JSON {...}" with the counters and latency percentiles (us).

local prebuilt = {}
local next_index = 0

function init(args)
   local path = args[1]
   local close = args[2] == "close"
   local headers = { ["Content-Type"] = "application/json" }
   if close then
      headers["Connection"] = "close"
   end
   for line in io.lines(path) do
      local signature, body = line:match("^(%x+)\t(.*)$")
      if signature then
         headers["X-Signature"] = signature
         prebuilt[#prebuilt + 1] = wrk.format("POST", nil, headers, body)
      end
   end
   if #prebuilt == 0 then
      error("no bodies in " .. tostring(path))
   end
end

function request()
   next_index = next_index % #prebuilt + 1
   return prebuilt[next_index]
end

function done(summary, latency, requests)
   local e = summary.errors
   local p = {}
   for _, q in ipairs({ 50, 75, 90, 99, 99.9 }) do
      p[#p + 1] = string.format('"%s":%d', tostring(q), latency:percentile(q))
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"percentiles":{%s}}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency.stdev, table.concat(p, ",")))
end
