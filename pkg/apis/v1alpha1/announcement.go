package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Protocol is how an IP is announced.
// +kubebuilder:validation:Enum=L2;BGP
type Protocol string

// The announcement protocols.
const (
	ProtocolL2  Protocol = "L2"
	ProtocolBGP Protocol = "BGP"
)

// AnnouncementSpec records that one node announces one of a Service's IPs.
type AnnouncementSpec struct {
	// Service is the name of the Service, in the Announcement's namespace.
	Service string `json:"service"`
	// IP is the announced address.
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:MaxLength=45
	IP string `json:"ip"`
	// Node is the announcing node.
	Node     string   `json:"node"`
	Protocol Protocol `json:"protocol"`
	// Interfaces the IP is answered on (L2).
	// +listType=atomic
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
	// Peers the IP is advertised to (BGP).
	// +listType=atomic
	// +optional
	Peers []string `json:"peers,omitempty"`
}

// Announcement answers "who announces what, how": speakers write one per
// Service, node and protocol while they announce, owned by the Service, and
// remove it when they stop.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=ann
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="IP",type=string,JSONPath=`.spec.ip`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.protocol`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Announcement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AnnouncementSpec `json:"spec"`
}

// AnnouncementList is a list of Announcements.
//
// +kubebuilder:object:root=true
type AnnouncementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Announcement `json:"items"`
}
