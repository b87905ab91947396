package ipam

import (
	"math"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRange(t *testing.T) {
	cases := map[string]struct {
		in       string
		want     string
		wantSize uint64
		wantErr  bool
	}{
		"ipv4 cidr":              {in: "10.200.0.0/28", want: "10.200.0.0-10.200.0.15", wantSize: 16},
		"host bits set":          {in: "10.200.0.5/30", want: "10.200.0.4-10.200.0.7", wantSize: 4},
		"single address":         {in: "10.0.0.1/32", want: "10.0.0.1-10.0.0.1", wantSize: 1},
		"ipv4 range":             {in: "10.200.1.10-10.200.1.20", want: "10.200.1.10-10.200.1.20", wantSize: 11},
		"range with spaces":      {in: " 10.0.0.1 - 10.0.0.2 ", want: "10.0.0.1-10.0.0.2", wantSize: 2},
		"ipv6 cidr":              {in: "fd00:200::/124", want: "fd00:200::-fd00:200::f", wantSize: 16},
		"ipv6 /64":               {in: "fd00::/64", want: "fd00::-fd00::ffff:ffff:ffff:ffff", wantSize: math.MaxUint64},
		"ipv6 /63 saturates":     {in: "fd00::/63", want: "fd00::-fd00::1:ffff:ffff:ffff:ffff", wantSize: math.MaxUint64},
		"ipv6 range across word": {in: "fd00::ffff:ffff:ffff:fffe-fd00:0:0:1::1", want: "fd00::ffff:ffff:ffff:fffe-fd00:0:0:1::1", wantSize: 4},
		"whole ipv4":             {in: "0.0.0.0/0", want: "0.0.0.0-255.255.255.255", wantSize: 1 << 32},
		"mixed families":         {in: "10.0.0.1-fd00::1", wantErr: true},
		"reversed":               {in: "10.0.0.9-10.0.0.1", wantErr: true},
		"reversed ipv6":          {in: "fd00::9-fd00::1", wantErr: true},
		"garbage":                {in: "ten.zero", wantErr: true},
		"bad prefix length":      {in: "10.0.0.0/33", wantErr: true},
		"empty":                  {in: "", wantErr: true},
		"zoned":                  {in: "fe80::1%eth0-fe80::2%eth0", wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := ParseRange(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseRange(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got := r.String(); got != tc.want {
				t.Errorf("range %s, want %s", got, tc.want)
			}
			if got := r.Size(); got != tc.wantSize {
				t.Errorf("size %d, want %d", got, tc.wantSize)
			}
		})
	}
}

func TestBuggyCount(t *testing.T) {
	for _, s := range []string{"10.0.0.0/24", "10.0.0.255-10.0.1.0", "10.0.0.1-10.0.0.254", "0.0.0.0/22", "10.0.0.3-10.0.2.7", "255.255.255.0/24"} {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		var want uint64
		for a := r.First; a.IsValid() && a.Compare(r.Last) <= 0; a = a.Next() {
			if isBuggy(a) {
				want++
			}
		}
		if got := r.buggyCount(); got != want {
			t.Errorf("%s: buggyCount %d, want %d", s, got, want)
		}
	}
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges(mustRanges(t, "10.0.0.10-10.0.0.20", "fd00::/120", "10.0.0.0/28", "10.0.0.21-10.0.0.22", "10.0.1.0/32"))
	var s []string
	for _, r := range got {
		s = append(s, r.String())
	}
	want := []string{"10.0.0.0-10.0.0.22", "10.0.1.0-10.0.1.0", "fd00::-fd00::ff"}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Fatalf("merged (-want +got):\n%s", diff)
	}
}

// FuzzParseRange checks that whatever parses describes a non-empty range of
// one family whose ends it contains, and that its text form parses back to
// the same range.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"10.0.0.0/24", "10.0.0.1-10.0.0.9", "fd00::/64", "fd00::1-fd00::2", "1.2.3.4/0", "::/0", "x-y", "10.0.0.9-10.0.0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if r.First.Is4() != r.Last.Is4() || r.Last.Less(r.First) {
			t.Fatalf("%q parsed to bad range %v", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) || r.Size() == 0 {
			t.Fatalf("%q: range %v does not contain its ends", s, r)
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("%q: %v does not round-trip: %v, %v", s, r, back, err)
		}
		if r.buggyCount() > r.Size() {
			t.Fatalf("%q: more buggy addresses than addresses", s)
		}
	})
}

// FuzzAllocator drives random sequences of assignments, releases, restores
// and pool changes, and checks after every step that no IP is held by two
// Services that may not share it and that the counts equal the truth.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{3, 3, 3, 3, 1, 1, 1, 1, 200, 100, 50, 25})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 512 {
			ops = ops[:512]
		}
		poolSets := [][]Pool{
			{pool(t, "a", "10.0.0.0/29"), pool(t, "b", "10.0.0.6-10.0.0.12", "fd00::/126")},
			{pool(t, "a", "10.0.0.0/30"), {Name: "c", Addresses: mustRanges(t, "10.0.0.3/32", "fd00::2/127"), AvoidBuggyIPs: true}},
			{{Name: "b", AutoAssign: true, Deleting: true, Addresses: mustRanges(t, "10.0.0.0/28")}, pool(t, "d", "fd00::/125")},
		}
		a := New()
		cur := poolSets[0]
		a.SetPools(cur)
		assign := func(s Service) {
			before := a.Assigned(s.Key)
			got, err := a.Assign(s)
			checkAssign(t, cur, s, before, got, err)
		}
		addrs := ips("10.0.0.1", "10.0.0.3", "10.0.0.7", "fd00::1", "fd00::3", "10.9.9.9")
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			s := Service{
				Key:        string(rune('a' + arg%8)),
				Families:   [][]Family{{IPv4}, {IPv6}, {IPv4, IPv6}, {IPv6, IPv4}}[arg>>3&3],
				Policy:     StackPolicy(arg >> 5 % 3),
				SharingKey: []string{"", "k", "k", "j"}[op>>4&3],
				BackendKey: []string{"", "", "sel"}[op>>6%3],
				Ports:      []Port{{"TCP", int32(op>>2&3) + 80}},
			}
			switch op % 8 {
			case 0, 1, 2:
				assign(s)
			case 3:
				s.RequestedIPs = []netip.Addr{addrs[int(arg)%len(addrs)]}
				assign(s)
			case 4:
				s.Pool = []string{"a", "b", "c", "d"}[arg%4]
				assign(s)
			case 5:
				a.Release(s.Key)
			case 6:
				_ = a.Restore(s, []netip.Addr{addrs[int(arg)%len(addrs)]})
			case 7:
				cur = poolSets[int(arg)%len(poolSets)]
				a.SetPools(cur)
			}
			checkInvariants(t, a)
		}
	})
}

// checkAssign checks what one Assign returned against the request and the
// pools: the families asked for, one address per family, from a pool that
// holds it (the named one when named), exactly the requested IPs when
// requested, and nothing new from a pool being deleted.
func checkAssign(t *testing.T, pools []Pool, s Service, before, got []Address, err error) {
	t.Helper()
	if err != nil && ReasonOf(err) != SharingConflict {
		if len(got) != 0 {
			t.Fatalf("Assign failed (%v) but returned %v", err, got)
		}
		return
	}
	seen := map[Family]bool{}
	for _, ad := range got {
		f := FamilyOf(ad.IP)
		if len(s.Families) > 0 && !slices.Contains(s.Families, f) {
			t.Fatalf("%s: %s is not of the families %v", s.Key, ad.IP, s.Families)
		}
		if seen[f] {
			t.Fatalf("%s: two addresses of one family: %v", s.Key, got)
		}
		seen[f] = true
		// An address it held stays, even when its pool shrank or went
		// (the controller reports it); a new one must come from a pool
		// that holds it, is not being deleted, and is the one named.
		if slices.ContainsFunc(before, func(b Address) bool { return b.IP == ad.IP }) {
			continue
		}
		i := slices.IndexFunc(pools, func(p Pool) bool { return p.Name == ad.Pool })
		if i < 0 || !slices.ContainsFunc(pools[i].Addresses, func(r Range) bool { return r.Contains(ad.IP) }) {
			t.Fatalf("%s: a new address %s from pool %q, which does not hold it", s.Key, ad.IP, ad.Pool)
		}
		if pools[i].Deleting {
			t.Fatalf("%s: a new address %s from pool %s, which is being deleted", s.Key, ad.IP, ad.Pool)
		}
		if s.Pool != "" && ad.Pool != s.Pool {
			t.Fatalf("%s: a new address %s from pool %s, the Service names %s", s.Key, ad.IP, ad.Pool, s.Pool)
		}
	}
	if err != nil {
		return // a clash: the old addresses, under the old terms
	}
	if len(s.RequestedIPs) > 0 {
		var ips []netip.Addr
		for _, ad := range got {
			ips = append(ips, ad.IP)
		}
		if !slices.Equal(ips, s.RequestedIPs) {
			t.Fatalf("%s: got %v, requested %v", s.Key, ips, s.RequestedIPs)
		}
	}
	switch {
	case len(got) == 0:
		t.Fatalf("%s: Assign succeeded with no address", s.Key)
	case s.Policy == SingleStack && len(got) != 1:
		t.Fatalf("%s: single-stack with %v", s.Key, got)
	case s.Policy == RequireDualStack && len(s.RequestedIPs) == 0 && len(s.Families) == 2 && len(got) != 2:
		t.Fatalf("%s: require-dual-stack with %v", s.Key, got)
	}
}
