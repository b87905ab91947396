package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AddressRange is one entry of a pool: a CIDR ("10.0.0.0/24", "fd00::/120")
// or an inclusive range of two addresses of one family ("10.0.0.10-10.0.0.20").
//
// The API server rejects reversed IPv4 ranges; CEL has no IP ordering and
// expanding IPv6 text exceeds the CRD cost budget, so a reversed IPv6 range
// is reported by the controller in the pool's Ready condition instead.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=100
// +kubebuilder:validation:XValidation:rule="isCIDR(self) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()))",message="must be a CIDR such as 10.0.0.0/24 or a range of two addresses such as 10.0.0.10-10.0.0.20"
// +kubebuilder:validation:XValidation:rule="isCIDR(self) || self.split('-').size() != 2 || !isIP(self.split('-')[0].trim()) || !isIP(self.split('-')[1].trim()) || ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family()",message="both ends of a range must be of the same IP family"
// +kubebuilder:validation:XValidation:rule="isCIDR(self) || self.split('-').size() != 2 || !isIP(self.split('-')[0].trim()) || !isIP(self.split('-')[1].trim()) || ip(self.split('-')[0].trim()).family() != 4 || ip(self.split('-')[1].trim()).family() != 4 || (int(self.split('-')[0].trim().split('.')[0]) * 16777216 + int(self.split('-')[0].trim().split('.')[1]) * 65536 + int(self.split('-')[0].trim().split('.')[2]) * 256 + int(self.split('-')[0].trim().split('.')[3])) <= (int(self.split('-')[1].trim().split('.')[0]) * 16777216 + int(self.split('-')[1].trim().split('.')[1]) * 65536 + int(self.split('-')[1].trim().split('.')[2]) * 256 + int(self.split('-')[1].trim().split('.')[3]))",message="the start of a range must not be after its end"
type AddressRange string

// IPPoolSpec is the set of addresses a pool hands out and who may use them.
type IPPoolSpec struct {
	// Addresses are the pool's CIDRs and ranges, IPv4 and/or IPv6.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=128
	// +listType=atomic
	Addresses []AddressRange `json:"addresses"`

	// AutoAssign false keeps the pool for Services that ask for it by name
	// (annotation ironlb.dev/ip-pool) or for one of its IPs.
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs keeps IPv4 addresses ending in .0 or .255 out of
	// automatic assignment, for clients that mistake them for network or
	// broadcast addresses.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// AllocateTo restricts which Services the pool serves; absent means any.
	// +optional
	AllocateTo *AllocateTo `json:"allocateTo,omitempty"`
}

// AllocateTo restricts a pool to some namespaces and Services and orders it
// among the pools that fit. A Service's namespace must be listed in
// Namespaces or selected by NamespaceSelector (when either is set), and the
// Service must be selected by ServiceSelector (when set).
type AllocateTo struct {
	// Priority orders pools that fit a Service: lower wins; pools without a
	// priority come after all pools with one, then by name.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Priority *int32 `json:"priority,omitempty"`

	// Namespaces the pool serves.
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelector selects further namespaces the pool serves.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// ServiceSelector selects the Services the pool serves.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
}

// FamilyCount counts the addresses of one family in a pool. Counts larger
// than the largest int64 (IPv6 pools of a /65 or wider) saturate there.
type FamilyCount struct {
	Total int64 `json:"total"`
	Used  int64 `json:"used"`
}

// IPPoolStatus reports a pool's use and health.
type IPPoolStatus struct {
	// +optional
	IPv4 *FamilyCount `json:"ipv4,omitempty"`
	// +optional
	IPv6 *FamilyCount `json:"ipv6,omitempty"`
	// Used and Free add up both families, for kubectl's columns.
	// +optional
	Used int64 `json:"used,omitempty"`
	// +optional
	Free int64 `json:"free,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Overlap (naming the other pools), Orphans (naming
	// the Services that hold IPs no longer in the pool) and InUse (naming the
	// Services that keep a deleted pool from going away).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPool is a set of external IPs that LoadBalancer Services get theirs from.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Used",type=integer,JSONPath=`.status.used`
// +kubebuilder:printcolumn:name="Free",type=integer,JSONPath=`.status.free`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
