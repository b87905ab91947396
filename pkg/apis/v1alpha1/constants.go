package v1alpha1

// The wire contract: the names that manifests, users, routers and other
// programs see, in one place. Change one only with a migration.
const (
	// LoadBalancerClass is the spec.loadBalancerClass ironlb serves.
	LoadBalancerClass = "ironlb.dev/ironlb"

	// Service annotations: the pool to allocate from, the IPs asked for,
	// and the key under which Services may share an IP.
	AnnotationPool       = "ironlb.dev/ip-pool"
	AnnotationIPs        = "ironlb.dev/load-balancer-ips"
	AnnotationSharingKey = "ironlb.dev/sharing-key"

	// AnnotationNewFlowsPerSource limits the new flows one client (its
	// /32, or /64 for IPv6) may open a second through each VIP of the
	// Service, on each node that receives them.
	AnnotationNewFlowsPerSource = "ironlb.dev/new-flows-per-source"

	// PoolProtectionFinalizer keeps an IPPool while Services hold its
	// addresses.
	PoolProtectionFinalizer = "ironlb.dev/pool-protection"

	// Announcement labels: the node that announces, the Service and the
	// protocol.
	LabelNode     = "ironlb.dev/node"
	LabelService  = "ironlb.dev/service"
	LabelProtocol = "ironlb.dev/protocol"

	// SystemNamespace is the namespace the manifests install into: the
	// default of the daemons' --namespace, where the speakers read their
	// Secrets.
	SystemNamespace = "ironlb-system"

	// ExcludeLabel (Kubernetes' own) takes a node out of external load
	// balancing: it announces nothing, and a BGP node drains first.
	ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// WellKnownCommunities are the community names a BGPAdvertisement may use,
// as ASN:VALUE (RFC 1997, 3765, 7999, 8326, 7611, 9494). The CEL rule on
// Community lists the same names; a test keeps them equal.
var WellKnownCommunities = map[string]string{
	"graceful-shutdown":   "65535:0",
	"accept-own":          "65535:1",
	"llgr-stale":          "65535:6",
	"no-llgr":             "65535:7",
	"blackhole":           "65535:666",
	"no-export":           "65535:65281",
	"no-advertise":        "65535:65282",
	"no-export-subconfed": "65535:65283",
	"no-peer":             "65535:65284",
}
