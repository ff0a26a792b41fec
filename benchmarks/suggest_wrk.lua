-- wrk script for /v1/suggest: 20 prefixes a shopper types, in turn (benchmarks/RESULTS.md, "Query suggestions")
local prefixes = {"c", "co", "cor", "cord", "cordl", "cordless", "cordless d", "ceiling f", "garden h", "bosch cordless dr", "led light b", "pvc p", "stainless s", "door h", "wa", "wat", "water h", "paint r", "tile", "toilet s"}
local i = 0
request = function()
  i = i + 1
  local q = prefixes[(i % #prefixes) + 1]
  return wrk.format("GET", "/v1/suggest?k=8&q=" .. q:gsub(" ", "%%20"))
end
