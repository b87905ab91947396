package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	ironlbv1alpha1 "github.com/ironlb/ironlb/pkg/apis/v1alpha1"
)

// TestSourceRanges: entries are read as kube-proxy reads them, and those
// that are no CIDR are ignored and returned.
func TestSourceRanges(t *testing.T) {
	got, bad := SourceRanges([]string{" 10.0.0.0/8", "192.168.1.7/24 ", "010.001.0.0/16", "fd00::/64", "", "not-a-cidr", "10.0.0.0/33"})
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.1.0/24"), // host bits cleared
		netip.MustParsePrefix("10.1.0.0/16"),    // leading zeros: decimal
		netip.MustParsePrefix("fd00::/64"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("ranges %v, want %v", got, want)
	}
	if !slices.Equal(bad, []string{"not-a-cidr", "10.0.0.0/33"}) {
		t.Errorf("bad %q", bad)
	}
}

// TestRangesOfFamily: a VIP gets its own family's ranges; a /0 or a list
// of only the other family leaves it open, as kube-proxy has it.
func TestRangesOfFamily(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	tests := map[string]struct {
		in     []netip.Prefix
		v4     bool
		wantV4 []netip.Prefix
	}{
		"mixed, v4 VIP":     {p("10.0.0.0/8", "fd00::/64"), true, p("10.0.0.0/8")},
		"mixed, v6 VIP":     {p("10.0.0.0/8", "fd00::/64"), false, p("fd00::/64")},
		"only v6, v4 VIP":   {p("fd00::/64"), true, nil},
		"zero prefix: open": {p("10.0.0.0/8", "0.0.0.0/0"), true, nil},
		"other family's /0": {p("10.0.0.0/8", "::/0"), true, p("10.0.0.0/8")},
	}
	for name, tc := range tests {
		if got := RangesOfFamily(tc.in, tc.v4); !slices.Equal(got, tc.wantV4) {
			t.Errorf("%s: %v, want %v", name, got, tc.wantV4)
		}
	}
}

// TestNewFlowsPerSource: the per-source limit is a whole number from 1 to
// MaxNewFlowsPerSource; anything else is an error that names the
// annotation, and config.Service refuses the Service with it.
func TestNewFlowsPerSource(t *testing.T) {
	for v, want := range map[string]uint32{"": 0, "1": 1, " 250 ": 250, "1000000000": 1_000_000_000,
		"0": 0, "-5": 0, "1.5": 0, "ten": 0, "1000000001": 0, "99999999999": 0} {
		svc := &corev1.Service{}
		if v != "" {
			svc.Annotations = map[string]string{ironlbv1alpha1.AnnotationNewFlowsPerSource: v}
		}
		got, err := NewFlowsPerSource(svc)
		bad := v != "" && want == 0
		if got != want || (err != nil) != bad {
			t.Errorf("%q: %d, %v; want %d, error %v", v, got, err, want, bad)
		}
		if bad && !strings.Contains(err.Error(), ironlbv1alpha1.AnnotationNewFlowsPerSource) {
			t.Errorf("%q: error %q does not name the annotation", v, err)
		}
		if _, err := Service(svc, nil); (err != nil) != bad {
			t.Errorf("%q: Service error %v, want error %v", v, err, bad)
		}
	}
}
