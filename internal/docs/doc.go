// Package docs holds the tests that keep docs/ true to the code: every
// CRD field is in the configuration reference, and every metric the
// Grafana dashboard uses is documented.
package docs
