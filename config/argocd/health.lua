-- Argo CD health check of appenv.dev/AppEnvironment (see README.md next to this file).
-- Argo CD runs it with the object as the global `obj` and shows the returned status and message.
-- Tested with Debian's lua5.1 on the samples in testdata/ (health_test.yaml lists the expected
-- results; operator/appenv/tests/argocd_health.rs runs them). Only base, string and table
-- functions are used: what Argo CD's sandboxed gopher-lua (Lua 5.1) offers.

local hs = {}

-- The condition of type `name`, or nil.
local function condition(status, name)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

-- The message of the first of `names` the status has, else `fallback`.
local function message(status, names, fallback)
  for _, name in ipairs(names) do
    local c = condition(status, name)
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the appenv operator to report a status"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the appenv operator to observe generation " .. tostring(generation)
    .. " (the status describes " .. tostring(observed or "none") .. ")"
  return hs
end

local phase = status.phase
if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = message(status, {"Ready"}, "Ready")
elseif phase == "Pending" or phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = message(status, {"Progressing", "Ready"}, phase)
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = message(status, {"Degraded", "Ready"}, "Degraded")
elseif phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = message(status, {"Valid", "Ready"}, "The spec is invalid")
elseif phase == "Suspended" or phase == "Sleeping" then
  hs.status = "Suspended"
  hs.message = message(status, {phase},
    phase == "Suspended" and "Suspended (spec.suspend): every component is scaled to 0"
      or "Sleeping: scaled to 0 until the next request")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
