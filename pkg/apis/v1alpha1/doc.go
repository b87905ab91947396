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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

// GroupVersion is the API group and version of these types.
var GroupVersion = schema.GroupVersion{Group: "ironlb.dev", Version: "v1alpha1"}

// SchemeBuilder registers the types with a runtime.Scheme.
var SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

// AddToScheme adds the types of this package to a scheme.
var AddToScheme = SchemeBuilder.AddToScheme
