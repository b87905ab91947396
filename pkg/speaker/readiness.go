package speaker

import (
	discoveryv1 "k8s.io/api/discovery/v1"
)

// endpointState is how the announcer and the data plane both judge one
// endpoint of an EndpointSlice, as kube-proxy does: Ready unset means
// ready, a terminating endpoint is never ready, and Serving unset follows
// Ready. Only the first address counts (the API says consumers use the
// first).
func endpointState(e *discoveryv1.Endpoint) (ready, serving bool) {
	ready = e.Conditions.Ready == nil || *e.Conditions.Ready
	if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
		ready = false
	}
	serving = ready
	if e.Conditions.Serving != nil {
		serving = *e.Conditions.Serving
	}
	return ready, serving || ready
}
