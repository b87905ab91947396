package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SecretKeyRef points at one key of a Secret.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:default=password
	// +optional
	Key string `json:"key,omitempty"`
}

// BGPPeerSpec describes a BGP session between each selected node and a
// router.
//
// +kubebuilder:validation:XValidation:rule="!has(self.holdTime) || !has(self.keepaliveTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) <= duration(self.holdTime)",message="keepaliveTime must not exceed holdTime"
// +kubebuilder:validation:XValidation:rule="!has(self.bfd) || !has(self.bfd.minimumTTL) || (has(self.ebgpMultiHop) && self.ebgpMultiHop)",message="bfd.minimumTTL applies to multihop sessions only: set ebgpMultiHop, or drop it"
// +kubebuilder:validation:XValidation:rule="has(self.myASN) != has(self.myASNFromLabel)",message="set exactly one of myASN and myASNFromLabel"
// +kubebuilder:validation:XValidation:rule="has(self.peerAddress) != has(self.dynamicPeerPrefix)",message="set exactly one of peerAddress and dynamicPeerPrefix"
// +kubebuilder:validation:XValidation:rule="!has(self.dynamicPeerPrefix) || has(self.passwordSecretRef)",message="dynamicPeerPrefix accepts sessions from a whole prefix: set passwordSecretRef, so that only routers that know the password get one"
// +kubebuilder:validation:XValidation:rule="!has(self.dynamicPeerPrefix) || !has(self.bfd)",message="bfd needs the router's address: it cannot be used with dynamicPeerPrefix"
// +kubebuilder:validation:XValidation:rule="!has(self.dynamicPeerPrefix) || !has(self.vrf)",message="dynamicPeerPrefix listens in the default VRF: it cannot be used with vrf"
// +kubebuilder:validation:XValidation:rule="!has(self.vrf) || !has(self.bfd)",message="bfd does not run in a VRF yet: drop bfd, or vrf"
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || !has(self.sourceInterface)",message="set at most one of sourceAddress and sourceInterface"
// +kubebuilder:validation:XValidation:rule="!has(self.extendedNextHop) || !self.extendedNextHop || !has(self.peerAddress) || !isIP(self.peerAddress) || ip(self.peerAddress).family() == 6",message="extendedNextHop is for IPv6 sessions: the peerAddress is IPv4"
// +kubebuilder:validation:XValidation:rule="!has(self.passwordPerNode) || !self.passwordPerNode || has(self.passwordSecretRef)",message="passwordPerNode needs passwordSecretRef"
type BGPPeerSpec struct {
	// PeerAddress is the router's IP address. Set it, or
	// dynamicPeerPrefix.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +optional
	PeerAddress string `json:"peerAddress,omitempty"`
	// DynamicPeerPrefix makes the session dynamic (BGP dynamic neighbors):
	// the nodes do not connect out; any router in this prefix may connect
	// to them, and gets a session with these settings. Only then does a
	// node listen for BGP: on TCP 179, bound to its own address of the
	// prefix's family (sourceAddress or sourceInterface when set, else its
	// InternalIP). It needs passwordSecretRef (TCP MD5), and peerPort is
	// not used. Set it, or peerAddress.
	// +kubebuilder:validation:MaxLength=49
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",message="must be a CIDR prefix with no host bits set, e.g. 10.0.0.0/24"
	// +optional
	DynamicPeerPrefix string `json:"dynamicPeerPrefix,omitempty"`
	// PeerASN is the router's autonomous system number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	PeerASN int64 `json:"peerASN"`
	// MyASN is the nodes' autonomous system number. Set it, or
	// myASNFromLabel.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	MyASN int64 `json:"myASN,omitempty"`
	// MyASNFromLabel takes each node's autonomous system number from the
	// node label with this key (a per-rack ASN, say). A node without the
	// label, or with a value that is not an AS number, keeps no session,
	// and its status entry says why.
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",message="must be a label key"
	// +optional
	MyASNFromLabel string `json:"myASNFromLabel,omitempty"`
	// PeerPort is the router's TCP port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=179
	// +optional
	PeerPort int32 `json:"peerPort,omitempty"`
	// SourceAddress is the local address the session starts from (one
	// node's, so usually with a nodeSelector; see sourceInterface for an
	// address per node).
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`
	// SourceInterface takes the session's local address, on each node,
	// from this interface: its first global address of the peer's family
	// (a per-rack uplink, say). A node without the interface, or without
	// such an address on it, keeps no session, and its status entry says
	// why.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][-A-Za-z0-9_.@]*$')",message="must be a network interface name"
	// +optional
	SourceInterface string `json:"sourceInterface,omitempty"`
	// RouterID is the BGP identifier (RFC 6286: an IPv4 address) the nodes
	// open this session with; absent means the node's IPv4 InternalIP. A
	// node runs one BGP router: every peer it keeps must agree on it, and
	// a peer whose routerID differs from another's (the first by name
	// wins) keeps no session on that node and says why. Changing the
	// router ID restarts the node's BGP sessions.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address"
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// VRF opens the session bound to this Linux VRF device on each node
	// (the socket is bound to the device, so the VRF's routing table
	// reaches the router), and advertises the VIP routes on it, with the
	// node's address in the VRF as next hop. A node without the device
	// keeps no session, and its status entry says why.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][-A-Za-z0-9_.@]*$')",message="must be a network interface name"
	// +optional
	VRF string `json:"vrf,omitempty"`
	// HoldTime is the BGP hold time: 0 (no keepalives) or at least 3s.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="must not be negative"
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || duration(self) >= duration('3s')",message="must be 0 or at least 3s"
	// +kubebuilder:default="90s"
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// KeepaliveTime is the interval between keepalives; absent means a
	// third of HoldTime.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="must not be negative"
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// PasswordSecretRef holds the TCP MD5 (RFC 2385) password.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// PasswordPerNode: the Secret holds a password per node, under the
	// node's name (passwordSecretRef's key is then not used). A node
	// without its key keeps no session, and its status entry says why.
	// +optional
	PasswordPerNode bool `json:"passwordPerNode,omitempty"`
	// EBGPMultiHop allows an eBGP peer that is more than one hop away.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`
	// NodeSelector chooses the nodes that peer; absent means all.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// BFD runs Bidirectional Forwarding Detection (RFC 5880) with the
	// peer: single hop (RFC 5881, UDP 3784, TTL 255 required), or multihop
	// (RFC 5883, UDP 4784) when ebgpMultiHop is set. When a session that
	// was Up goes Down, the node closes its BGP session at once, and keeps
	// it closed until BFD is Up again. Absent means no BFD.
	// +optional
	BFD *BFDSpec `json:"bfd,omitempty"`
	// AddressFamilies are the route families the session carries (MP-BGP,
	// RFC 4760): IPv4, IPv6 or both, whatever the session's own family.
	// A route of the other family goes with this node's address of that
	// family as next hop (its InternalIP), so a dual-stack node needs one
	// session per router. Absent means the session's own family only.
	// +kubebuilder:validation:MaxItems=2
	// +listType=set
	// +optional
	AddressFamilies []AddressFamily `json:"addressFamilies,omitempty"`
	// ExtendedNextHop sends the IPv4 routes of an IPv6 session with this
	// node's IPv6 session address as next hop (RFC 8950), for fabrics
	// whose links have no IPv4. It takes effect once the router has
	// offered the extended next hop capability on the session; until then,
	// or when it does not, the IPv4 routes go with the node's IPv4 address
	// as next hop, and the status says so.
	// +optional
	ExtendedNextHop bool `json:"extendedNextHop,omitempty"`
	// GracefulRestart (RFC 4724) keeps this node's routes at the router
	// while its speaker restarts (an upgrade, a crash): the router holds
	// them as stale for up to restartTime, and the new speaker refreshes
	// them. The data plane forwards on meanwhile. A node that is drained
	// (labelled node.kubernetes.io/exclude-from-external-load-balancers)
	// or an uninstall still withdraws, after the GRACEFUL_SHUTDOWN
	// community (RFC 8326). Absent means off: a speaker that stops
	// withdraws its routes.
	// +optional
	GracefulRestart *GracefulRestartSpec `json:"gracefulRestart,omitempty"`
}

// GracefulRestartSpec sets BGP graceful restart.
type GracefulRestartSpec struct {
	// RestartTime is how long the router keeps this node's routes after
	// its session closes, waiting for the speaker to come back (1s-4095s,
	// the capability's 12 bits).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('4095s')",message="must be between 1s and 4095s"
	// +kubebuilder:default="120s"
	// +optional
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// AddressFamily is a BGP route family.
// +kubebuilder:validation:Enum=IPv4;IPv6
type AddressFamily string

// The address families.
const (
	FamilyIPv4 AddressFamily = "IPv4"
	FamilyIPv6 AddressFamily = "IPv6"
)

// BFDSpec sets a BFD session's timers, as MetalLB's BFDProfile does.
type BFDSpec struct {
	// ReceiveInterval is the shortest interval between packets this node
	// accepts from the peer.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="must be between 10ms and 60s"
	// +kubebuilder:default="300ms"
	// +optional
	ReceiveInterval *metav1.Duration `json:"receiveInterval,omitempty"`
	// TransmitInterval is how often this node would like to send once the
	// session is Up (the peer may ask for less often).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="must be between 10ms and 60s"
	// +kubebuilder:default="300ms"
	// +optional
	TransmitInterval *metav1.Duration `json:"transmitInterval,omitempty"`
	// DetectMultiplier: the peer declares this node down after this many
	// of its intervals without a packet, and the other way round.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:default=3
	// +optional
	DetectMultiplier int32 `json:"detectMultiplier,omitempty"`
	// MinimumTTL is, for a multihop session, the lowest TTL a packet may
	// arrive with (254: one router between). Only with ebgpMultiHop;
	// single-hop sessions always require 255.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	// +optional
	MinimumTTL *int32 `json:"minimumTTL,omitempty"`
}

// BGPSessionStatus is one node's session with the peer, as its speaker
// last saw it.
type BGPSessionStatus struct {
	// Node is the node whose speaker keeps the session.
	Node string `json:"node"`
	// State is the BGP state: Idle, Connect, Active, OpenSent,
	// OpenConfirm or Established.
	State string `json:"state"`
	// Since is when the session entered State.
	// +optional
	Since metav1.Time `json:"since,omitempty"`
	// Prefixes counts the routes the node offers the peer.
	// +optional
	Prefixes int32 `json:"prefixes,omitempty"`
	// BFD is the BFD session's state (Up, Init, Down, AdminDown) when the
	// peer has bfd set.
	// +optional
	BFD string `json:"bfd,omitempty"`
	// GracefulRestart tells whether graceful restart was negotiated with
	// the peer on the current session (Negotiated), asked for and not
	// offered by the peer (NotSupportedByPeer), or not configured (empty).
	// +optional
	GracefulRestart string `json:"gracefulRestart,omitempty"`
	// ExtendedNextHop tells, for a peer with extendedNextHop, whether the
	// router offered the extended next hop capability (RFC 8950) on the
	// current session (Negotiated: IPv4 routes go with an IPv6 next hop)
	// or not (NotSupportedByPeer: they go with the node's IPv4 address).
	// +optional
	ExtendedNextHop string `json:"extendedNextHop,omitempty"`
	// Routers are, for a dynamicPeerPrefix peer, the routers that have a
	// session with the node now.
	// +optional
	Routers []string `json:"routers,omitempty"`
	// Message explains a session that is not Established, or a BFD
	// session that is not Up.
	// +optional
	Message string `json:"message,omitempty"`
}

// BGPPeerStatus reports the sessions of the nodes that peer.
type BGPPeerStatus struct {
	// Nodes has an entry per node whose speaker keeps a session with the
	// peer; each speaker writes its own.
	// +listType=map
	// +listMapKey=node
	// +optional
	Nodes []BGPSessionStatus `json:"nodes,omitempty"`
}

// BGPPeer is a router that the speakers open BGP sessions with.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bgpp
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Prefix",type=string,JSONPath=`.spec.dynamicPeerPrefix`,priority=1
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="Sessions",type=string,JSONPath=`.status.nodes[*].state`
// +kubebuilder:printcolumn:name="BFD",type=string,JSONPath=`.status.nodes[*].bfd`,priority=1
// +kubebuilder:printcolumn:name="GR",type=string,JSONPath=`.status.nodes[*].gracefulRestart`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
