"""Running the service on a Ray cluster: job submission, the runtime environment, and the
local stand-ins for a cloud (a `ray up` over ssh to 127.0.0.1, a fake multi-node GPU cluster)."""
