"""Each mode's behaviour, written once and run against both actuators of the same YAML: the
local runtime (``infermodes up``) and the operator on the test control plane."""
