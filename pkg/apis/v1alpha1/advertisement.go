package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PoolSelection chooses the pools an advertisement applies to: by name, by
// label, or (neither) all pools.
type PoolSelection struct {
	// IPPools names the pools.
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	// +optional
	IPPools []string `json:"ipPools,omitempty"`
	// IPPoolSelector selects the pools by label.
	// +optional
	IPPoolSelector *metav1.LabelSelector `json:"ipPoolSelector,omitempty"`
}

// L2AdvertisementSpec says which pools' IPs are announced by ARP/NDP, from
// which nodes and on which interfaces.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.ipPools) && size(self.ipPools) > 0 && has(self.ipPoolSelector))",message="set ipPools or ipPoolSelector, not both"
type L2AdvertisementSpec struct {
	PoolSelection `json:",inline"`
	// NodeSelector chooses the nodes that may announce; absent means all.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// Interfaces to answer on; absent means the interface that routes to the
	// IP's subnet, else every up, non-loopback interface.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=15
	// +listType=set
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
}

// AdvertisementStatus says whether an advertisement is in effect as
// written.
type AdvertisementStatus struct {
	// Conditions: Accepted (False with InvalidSelector, PoolNotFound,
	// PeerNotFound or AggregationWiderThanPool) and, for
	// BGPAdvertisements, Conflict (True when another one gives the same
	// prefixes to the same peer from the same node with other attributes).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// L2Advertisement announces pools' IPs on the local network by ARP (IPv4)
// and NDP (IPv6): one node answers for each IP.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=l2adv
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipPools`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec L2AdvertisementSpec `json:"spec,omitempty"`
	// +optional
	Status AdvertisementStatus `json:"status,omitempty"`
}

// L2AdvertisementList is a list of L2Advertisements.
//
// +kubebuilder:object:root=true
type L2AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []L2Advertisement `json:"items"`
}

// Community is a BGP community: "ASN:VALUE" (16 bits each), "large:GLOBAL:
// LOCAL1:LOCAL2" (32 bits each) or a well-known name.
//
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{1,5}:[0-9]{1,5}$') ? self.split(':').all(p, int(p) <= 65535) : self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') ? self.split(':').slice(1, 4).all(p, int(p) <= 4294967295) : self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'blackhole', 'graceful-shutdown', 'accept-own', 'llgr-stale', 'no-llgr']",message="must be ASN:VALUE (each 0-65535), large:GLOBAL:LOCAL1:LOCAL2 (each 0-4294967295) or a well-known community such as no-export"
type Community string

// BGPAdvertisementSpec says which pools' IPs are advertised over BGP, to
// which peers, from which nodes and with which attributes.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.ipPools) && size(self.ipPools) > 0 && has(self.ipPoolSelector))",message="set ipPools or ipPoolSelector, not both"
type BGPAdvertisementSpec struct {
	PoolSelection `json:",inline"`
	// Peers names the BGPPeers to advertise to; absent means all.
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	// +optional
	Peers []string `json:"peers,omitempty"`
	// NodeSelector chooses the nodes that advertise; absent means all.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// AggregationLength is the IPv4 prefix length announced for each IP.
	// A prefix that would reach outside the pool entry holding the IP is
	// never announced.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:default=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`
	// AggregationLengthV6 is the IPv6 prefix length announced for each IP,
	// with the same limit.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +kubebuilder:default=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
	// LocalPref is the LOCAL_PREF attribute, sent to iBGP peers only.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	LocalPref *int64 `json:"localPref,omitempty"`
	// Communities attached to the advertised routes.
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +optional
	Communities []Community `json:"communities,omitempty"`
}

// BGPAdvertisement advertises pools' IPs to BGP peers from every eligible
// node, so routers can spread traffic across them (ECMP).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpadv
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.status.conditions[?(@.type=="Conflict")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPAdvertisementSpec `json:"spec,omitempty"`
	// +optional
	Status AdvertisementStatus `json:"status,omitempty"`
}

// BGPAdvertisementList is a list of BGPAdvertisements.
//
// +kubebuilder:object:root=true
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}
