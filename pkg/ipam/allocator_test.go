package ipam

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustRanges(t testing.TB, ss ...string) []Range {
	t.Helper()
	var out []Range
	for _, s := range ss {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatalf("ParseRange(%q): %v", s, err)
		}
		out = append(out, r)
	}
	return out
}

func pool(t testing.TB, name string, addrs ...string) Pool {
	return Pool{Name: name, AutoAssign: true, Addresses: mustRanges(t, addrs...)}
}

func ips(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func svc(key string, mods ...func(*Service)) Service {
	ns, _, _ := strings.Cut(key, "/")
	s := Service{Key: key, Namespace: ns, Families: []Family{IPv4}}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func labelsMatch(want map[string]string) Matcher {
	return func(l map[string]string) bool {
		for k, v := range want {
			if l[k] != v {
				return false
			}
		}
		return true
	}
}

// step is one call on the allocator and what it must return.
type step struct {
	svc        Service
	release    string
	restore    []netip.Addr
	wantIPs    []string
	wantReason Reason
}

func TestAllocator(t *testing.T) {
	local := func(sel string) func(*Service) { return func(s *Service) { s.BackendKey = sel } }
	key := func(k string) func(*Service) { return func(s *Service) { s.SharingKey = k } }
	ports := func(ps ...Port) func(*Service) { return func(s *Service) { s.Ports = ps } }
	req := func(a ...string) func(*Service) { return func(s *Service) { s.RequestedIPs = ips(a...) } }
	inPool := func(p string) func(*Service) { return func(s *Service) { s.Pool = p } }
	fams := func(p StackPolicy, f ...Family) func(*Service) {
		return func(s *Service) { s.Policy, s.Families = p, f }
	}
	tcp80 := Port{"TCP", 80}
	tcp443 := Port{"TCP", 443}

	cases := map[string]struct {
		pools []Pool
		steps []step
	}{
		"lowest free address first, then the next": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2"), wantIPs: []string{"10.0.0.1"}},
			},
		},
		"same request keeps its IP": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2"), wantIPs: []string{"10.0.0.1"}},
				{release: "a/1"},
				{svc: svc("a/2"), wantIPs: []string{"10.0.0.1"}},
			},
		},
		"released address is reused, lowest first": {
			pools: []Pool{pool(t, "p", "10.0.0.0/29")},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2"), wantIPs: []string{"10.0.0.1"}},
				{svc: svc("a/3"), wantIPs: []string{"10.0.0.2"}},
				{release: "a/2"},
				{release: "a/1"},
				{svc: svc("a/4"), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/5"), wantIPs: []string{"10.0.0.1"}},
				{svc: svc("a/6"), wantIPs: []string{"10.0.0.3"}},
			},
		},
		"range entry": {
			pools: []Pool{pool(t, "p", "10.0.1.10-10.0.1.11")},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.1.10"}},
				{svc: svc("a/2"), wantIPs: []string{"10.0.1.11"}},
				{svc: svc("a/3"), wantReason: PoolExhausted},
			},
		},
		"exhausted pool, then a release frees room": {
			pools: []Pool{pool(t, "p", "10.0.0.1/32")},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.1"}},
				{svc: svc("a/2"), wantReason: PoolExhausted},
				{release: "a/1"},
				{svc: svc("a/2"), wantIPs: []string{"10.0.0.1"}},
			},
		},
		"avoidBuggyIPs skips .0 and .255": {
			pools: []Pool{{Name: "p", AutoAssign: true, AvoidBuggyIPs: true, Addresses: mustRanges(t, "10.0.0.255-10.0.1.1")}},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.1.1"}},
				{svc: svc("a/2"), wantReason: PoolExhausted},
			},
		},
		"no pool at all": {
			steps: []step{{svc: svc("a/1"), wantReason: NoPool}},
		},
		"autoAssign false is used only when asked for": {
			pools: []Pool{{Name: "manual", Addresses: mustRanges(t, "10.0.0.0/30")}},
			steps: []step{
				{svc: svc("a/1"), wantReason: NoPool},
				{svc: svc("a/2", inPool("manual")), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/3", req("10.0.0.3")), wantIPs: []string{"10.0.0.3"}},
			},
		},
		"priority: lower first, unset last, then by name": {
			pools: []Pool{
				pool(t, "a-none", "10.0.3.0/32"),
				{Name: "z-low", AutoAssign: true, HasPriority: true, Priority: 1, Addresses: mustRanges(t, "10.0.1.0/32")},
				{Name: "b-high", AutoAssign: true, HasPriority: true, Priority: 5, Addresses: mustRanges(t, "10.0.2.0/32")},
				pool(t, "b-none", "10.0.4.0/32"),
			},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.1.0"}},
				{svc: svc("a/2"), wantIPs: []string{"10.0.2.0"}},
				{svc: svc("a/3"), wantIPs: []string{"10.0.3.0"}},
				{svc: svc("a/4"), wantIPs: []string{"10.0.4.0"}},
			},
		},
		"pool annotation": {
			pools: []Pool{pool(t, "first", "10.0.0.0/32"), pool(t, "second", "10.0.1.0/32")},
			steps: []step{
				{svc: svc("a/1", inPool("second")), wantIPs: []string{"10.0.1.0"}},
				{svc: svc("a/2", inPool("missing")), wantReason: NoPool},
			},
		},
		"pool annotation changed moves the Service": {
			pools: []Pool{pool(t, "first", "10.0.0.0/32"), pool(t, "second", "10.0.1.0/32")},
			steps: []step{
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", inPool("first")), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", inPool("second")), wantIPs: []string{"10.0.1.0"}},
			},
		},
		"namespace restriction": {
			pools: []Pool{{Name: "team", AutoAssign: true, Namespaces: []string{"team-a"}, Addresses: mustRanges(t, "10.0.0.0/30")}},
			steps: []step{
				{svc: svc("team-b/1"), wantReason: NoPool},
				{svc: svc("team-b/2", inPool("team")), wantReason: NotAllowed},
				{svc: svc("team-b/3", req("10.0.0.2")), wantReason: NotAllowed},
				{svc: svc("team-a/1"), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"namespace selector and service selector": {
			pools: []Pool{{
				Name: "prod", AutoAssign: true, Addresses: mustRanges(t, "10.0.0.0/30"),
				NamespaceSelector: labelsMatch(map[string]string{"tier": "prod"}),
				ServiceSelector:   labelsMatch(map[string]string{"expose": "public"}),
			}},
			steps: []step{
				{svc: svc("x/1", func(s *Service) { s.NamespaceLabels = map[string]string{"tier": "prod"} }), wantReason: NoPool},
				{svc: svc("x/2", func(s *Service) { s.Labels = map[string]string{"expose": "public"} }), wantReason: NoPool},
				{svc: svc("x/3", func(s *Service) {
					s.NamespaceLabels = map[string]string{"tier": "prod"}
					s.Labels = map[string]string{"expose": "public"}
				}), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"requested IP": {
			pools: []Pool{pool(t, "p", "10.0.0.0/24")},
			steps: []step{
				{svc: svc("a/1", req("10.0.0.7")), wantIPs: []string{"10.0.0.7"}},
				{svc: svc("a/2", req("10.0.0.7")), wantReason: RequestedIPInUse},
				{svc: svc("a/3", req("10.9.9.9")), wantReason: RequestedIPNotInPool},
				{svc: svc("a/4", req("10.0.0.8"), inPool("other")), wantReason: RequestedIPNotInPool},
				{svc: svc("a/5", req("10.0.0.1", "10.0.0.2")), wantReason: InvalidRequest},
				{svc: svc("a/6", req("fd00::1")), wantReason: InvalidRequest},
				// Automatic allocation goes around the requested address.
				{svc: svc("a/7"), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"requested IP changed moves the Service": {
			pools: []Pool{pool(t, "p", "10.0.0.0/24")},
			steps: []step{
				{svc: svc("a/1", req("10.0.0.7")), wantIPs: []string{"10.0.0.7"}},
				{svc: svc("a/1", req("10.0.0.9")), wantIPs: []string{"10.0.0.9"}},
				{svc: svc("a/2", req("10.0.0.7")), wantIPs: []string{"10.0.0.7"}},
			},
		},
		"sharing: same key, distinct ports": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
				// A third with a clashing port gets an address of its own.
				{svc: svc("a/3", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.1"}},
				{svc: svc("a/4", key("k"), ports(tcp80), req("10.0.0.0")), wantReason: SharingConflict},
				{svc: svc("a/5", key("other"), req("10.0.0.0")), wantReason: SharingConflict},
				{svc: svc("a/6", req("10.0.0.0")), wantReason: RequestedIPInUse},
				{svc: svc("a/7", key("k"), ports(Port{"UDP", 80}), req("10.0.0.0")), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"sharing: Local with Cluster never, Local with Local same selector only": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", key("k"), ports(tcp80), local("app=x")), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp443), req("10.0.0.0")), wantReason: SharingConflict},
				{svc: svc("a/3", key("k"), ports(tcp443), local("app=y"), req("10.0.0.0")), wantReason: SharingConflict},
				{svc: svc("a/4", key("k"), ports(tcp443), local("app=x"), req("10.0.0.0")), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"shared IP is freed only when its last holder goes": {
			pools: []Pool{pool(t, "p", "10.0.0.0/32")},
			steps: []step{
				{svc: svc("a/1", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
				{release: "a/1"},
				{svc: svc("a/3"), wantReason: PoolExhausted},
				{release: "a/2"},
				{svc: svc("a/3"), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"ports changed into a clash keep the IP, with a conflict, until it is gone": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}, wantReason: SharingConflict},
				{release: "a/1"},
				{svc: svc("a/2", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
			},
		},
		// A Service's IP moves only when the contract allows it (type,
		// class, requested IPs, pool, families), never for its sharing
		// terms while the sharing rules allow them.
		"adding a sharing key keeps the IP": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				// The IP is shared under the new key from now on.
				{svc: svc("a/2", key("k"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"changing a shared key that still fits keeps the IP": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", key("old"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", key("new"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("old"), ports(tcp443)), wantIPs: []string{"10.0.0.1"}},
			},
		},
		"a sharing key that clashes keeps the old IP, with a conflict": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("other"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}, wantReason: SharingConflict},
			},
		},
		"two sharers move to Local one after the other: kept, the clash resolves": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", key("k"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/2", key("k"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", key("k"), local("app=x"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}, wantReason: SharingConflict},
				{svc: svc("a/2", key("k"), local("app=x"), ports(tcp443)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", key("k"), local("app=x"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				// A third with the old terms no longer fits.
				{svc: svc("a/3", key("k"), ports(Port{"TCP", 8080}), req("10.0.0.0")), wantReason: SharingConflict},
			},
		},
		"switching to Local, or changing a Local selector, keeps the IP": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1", ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", local("app=web"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", local("app=web2"), ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/1", ports(tcp80)), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"dual stack": {
			pools: []Pool{pool(t, "v4", "10.0.0.0/32"), pool(t, "v6", "fd00::/127")},
			steps: []step{
				{svc: svc("a/1", fams(RequireDualStack, IPv6, IPv4)), wantIPs: []string{"fd00::", "10.0.0.0"}},
				// The one IPv4 address is taken: Require gets nothing and
				// gives back the IPv6 it tried.
				{svc: svc("a/2", fams(RequireDualStack, IPv4, IPv6)), wantReason: PoolExhausted},
				{svc: svc("a/3", fams(PreferDualStack, IPv4, IPv6)), wantIPs: []string{"fd00::1"}},
				{svc: svc("a/4", fams(SingleStack, IPv6)), wantReason: PoolExhausted},
				{release: "a/1"},
				{svc: svc("a/5", fams(SingleStack, IPv6)), wantIPs: []string{"fd00::"}},
				// The Prefer Service gets its missing family without losing
				// the one it holds.
				{svc: svc("a/3", fams(PreferDualStack, IPv4, IPv6)), wantIPs: []string{"fd00::1", "10.0.0.0"}},
			},
		},
		"dual-stack pool gives SingleStack Services their primary family": {
			pools: []Pool{pool(t, "dual", "10.0.0.0/32", "fd00::/128")},
			steps: []step{
				{svc: svc("a/1", fams(SingleStack, IPv6, IPv4)), wantIPs: []string{"fd00::"}},
				{svc: svc("a/2", fams(SingleStack, IPv4)), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"requested dual-stack IPs": {
			pools: []Pool{pool(t, "dual", "10.0.0.0/24", "fd00::/120")},
			steps: []step{
				{svc: svc("a/1", fams(RequireDualStack, IPv4, IPv6), req("10.0.0.5", "fd00::5")), wantIPs: []string{"10.0.0.5", "fd00::5"}},
			},
		},
		"restore keeps IPs even outside every pool": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1"), restore: ips("10.0.0.2")},
				{svc: svc("a/2"), restore: ips("192.168.9.9")},
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.2"}},
				{svc: svc("a/2"), wantIPs: []string{"192.168.9.9"}},
				{svc: svc("a/3"), wantIPs: []string{"10.0.0.0"}},
				{svc: svc("a/4"), wantIPs: []string{"10.0.0.1"}},
				{svc: svc("a/5"), wantIPs: []string{"10.0.0.3"}},
			},
		},
		"restore refuses a second unshareable holder": {
			pools: []Pool{pool(t, "p", "10.0.0.0/30")},
			steps: []step{
				{svc: svc("a/1"), restore: ips("10.0.0.2")},
				{svc: svc("a/2"), restore: ips("10.0.0.2"), wantReason: RequestedIPInUse},
				{svc: svc("a/2"), wantIPs: []string{"10.0.0.0"}},
			},
		},
		"deleting pool gives nothing new but keeps holders": {
			pools: []Pool{{Name: "p", AutoAssign: true, Deleting: true, Addresses: mustRanges(t, "10.0.0.0/30")}},
			steps: []step{
				{svc: svc("a/1"), restore: ips("10.0.0.1")},
				{svc: svc("a/1"), wantIPs: []string{"10.0.0.1"}},
				{svc: svc("a/2"), wantReason: NoPool},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := New()
			a.SetPools(tc.pools)
			for i, st := range tc.steps {
				if st.release != "" {
					a.Release(st.release)
					continue
				}
				var got []Address
				var err error
				if st.restore != nil {
					err = a.Restore(st.svc, st.restore)
					got = a.Assigned(st.svc.Key)
				} else {
					got, err = a.Assign(st.svc)
				}
				if r := ReasonOf(err); r != st.wantReason {
					t.Fatalf("step %d (%s): reason %q (%v), want %q", i, st.svc.Key, r, err, st.wantReason)
				}
				if st.restore != nil && st.wantIPs == nil {
					continue
				}
				var gotIPs []string
				for _, ad := range got {
					gotIPs = append(gotIPs, ad.IP.String())
				}
				if diff := cmp.Diff(st.wantIPs, gotIPs); diff != "" {
					t.Fatalf("step %d (%s): IPs (-want +got):\n%s", i, st.svc.Key, diff)
				}
				checkInvariants(t, a)
			}
		})
	}
}

func TestUsageAndOrphans(t *testing.T) {
	a := New()
	a.SetPools([]Pool{pool(t, "p", "10.0.0.0/29", "fd00::/64"), {Name: "q", Addresses: mustRanges(t, "10.0.1.0/24")}})
	for _, k := range []string{"a/1", "a/2", "a/3"} {
		if _, err := a.Assign(svc(k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Assign(svc("a/4", func(s *Service) { s.Families = []Family{IPv6} })); err != nil {
		t.Fatal(err)
	}
	u, _ := a.Usage("p")
	want := Usage{
		IPv4:    FamilyUsage{Total: 8, Used: 3},
		IPv6:    FamilyUsage{Total: 1<<64 - 1, Used: 1},
		Holders: []string{"a/1", "a/2", "a/3", "a/4"},
	}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Fatalf("usage (-want +got):\n%s", diff)
	}
	// Shrink the pool: holders of removed addresses keep them and become
	// orphans of the pool.
	a.SetPools([]Pool{pool(t, "p", "10.0.0.0/31")})
	u, _ = a.Usage("p")
	want = Usage{IPv4: FamilyUsage{Total: 2, Used: 2}, Holders: []string{"a/1", "a/2"}, Orphans: []string{"a/3", "a/4"}}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Fatalf("usage after shrink (-want +got):\n%s", diff)
	}
	if got, _ := a.Assign(svc("a/3")); len(got) != 1 || got[0].IP != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("orphan lost its IP: %v", got)
	}
	if _, ok := a.Usage("missing"); ok {
		t.Fatal("Usage of an unknown pool reported ok")
	}
}

func TestOverlaps(t *testing.T) {
	got := Overlaps([]Pool{
		pool(t, "a", "10.0.0.0/24"),
		pool(t, "b", "10.0.0.200-10.0.1.5"),
		pool(t, "c", "10.0.2.0/24", "fd00::/64"),
		pool(t, "d", "fd00::ffff/128"),
	})
	want := map[string][]string{"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("overlaps (-want +got):\n%s", diff)
	}
}

// checkInvariants verifies the allocator's indexes against the truth
// recomputed from what each Service holds.
func checkInvariants(t testing.TB, a *Allocator) {
	t.Helper()
	holders := map[netip.Addr][]*holding{}
	for key, h := range a.services {
		if key != h.svc.Key {
			t.Fatalf("service %s indexed as %s", h.svc.Key, key)
		}
		seen := map[netip.Addr]bool{}
		for _, ad := range h.addrs {
			if seen[ad.IP] {
				t.Fatalf("%s holds %s twice", key, ad.IP)
			}
			seen[ad.IP] = true
			holders[ad.IP] = append(holders[ad.IP], h)
		}
	}
	if len(holders) != len(a.ips) {
		t.Fatalf("%d IPs held, %d indexed", len(holders), len(a.ips))
	}
	for ip, hs := range holders {
		u := a.ips[ip]
		if u == nil || len(u.holders) != len(hs) {
			t.Fatalf("%s: index disagrees with holders", ip)
		}
		for i, x := range hs {
			for _, y := range hs[i+1:] {
				if x.conflict != nil || y.conflict != nil {
					continue // kept in a clash, and reported
				}
				if x.svc.SharingKey == "" || x.svc.SharingKey != y.svc.SharingKey || x.svc.BackendKey != y.svc.BackendKey {
					t.Fatalf("%s held by %s and %s, which may not share", ip, x.svc.Key, y.svc.Key)
				}
				for _, p := range x.svc.Ports {
					for _, q := range y.svc.Ports {
						if p == q {
							t.Fatalf("%s: %s and %s both use %v", ip, x.svc.Key, y.svc.Key, p)
						}
					}
				}
			}
		}
	}
	for _, ps := range a.ordered {
		var used [2]uint64
		for ip := range holders {
			if ps.contains(ip) {
				used[famIndex(FamilyOf(ip))]++
			}
		}
		if used[0] != ps.fam[0].used || used[1] != ps.fam[1].used {
			t.Fatalf("pool %s counts %d/%d used, truth %d/%d", ps.Name, ps.fam[0].used, ps.fam[1].used, used[0], used[1])
		}
		if ps.fam[0].used > ps.fam[0].total {
			t.Fatalf("pool %s: used %d > total %d", ps.Name, ps.fam[0].used, ps.fam[0].total)
		}
	}
}
