// Package v1alpha1 holds ironlb's custom resources, API group ironlb.dev:
// IPPool, L2Advertisement, BGPPeer, BGPAdvertisement and Announcement.
//
// Validation that OpenAPI and CEL can express lives in the markers here, so
// the API server rejects bad input with a message that names the field; what
// needs the whole picture (overlapping pools, unknown pool names) is reported
// in status conditions and Events by the controller.
//
// +kubebuilder:object:generate=true
// +groupName=ironlb.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of these types.
var GroupVersion = schema.GroupVersion{Group: "ironlb.dev", Version: "v1alpha1"}

var (
	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&IPPool{}, &IPPoolList{},
		&L2Advertisement{}, &L2AdvertisementList{},
		&BGPPeer{}, &BGPPeerList{},
		&BGPAdvertisement{}, &BGPAdvertisementList{},
		&Announcement{}, &AnnouncementList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
