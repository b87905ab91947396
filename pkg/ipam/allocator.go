package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// StackPolicy is a Service's spec.ipFamilyPolicy.
type StackPolicy uint8

// The three IP family policies of a Service.
const (
	SingleStack StackPolicy = iota
	PreferDualStack
	RequireDualStack
)

// Port is one port a Service exposes; two Services sharing an IP must not
// expose the same one.
type Port struct {
	Protocol string
	Port     int32
}

// Service is what the allocator needs to know of a LoadBalancer Service.
type Service struct {
	// Key identifies the Service, "namespace/name".
	Key       string
	Namespace string
	// NamespaceLabels are the labels of the Service's namespace, matched
	// against pools' namespace selectors.
	NamespaceLabels map[string]string
	// Labels are the Service's own labels, matched against pools' service
	// selectors.
	Labels map[string]string
	// Families lists the Service's IP families, primary first. Empty means
	// IPv4.
	Families []Family
	Policy   StackPolicy
	// Pool, when set, is the only pool to allocate from.
	Pool string
	// RequestedIPs, when set, are exactly the IPs the Service must get (at
	// most one per family).
	RequestedIPs []netip.Addr
	// SharingKey lets Services with the same key hold the same IP.
	SharingKey string
	Ports      []Port
	// BackendKey must be equal for Services that share an IP: empty for
	// externalTrafficPolicy Cluster, the pod selector for Local.
	BackendKey string
}

// Reason says why an allocation failed; it is the reason of the Warning
// Event the controller emits.
type Reason string

// The reasons an allocation can fail.
const (
	PoolExhausted        Reason = "PoolExhausted"
	NoPool               Reason = "NoPool"
	RequestedIPNotInPool Reason = "RequestedIPNotInPool"
	RequestedIPInUse     Reason = "RequestedIPInUse"
	NotAllowed           Reason = "NotAllowed"
	SharingConflict      Reason = "SharingConflict"
	InvalidRequest       Reason = "InvalidRequest"
)

// Error is an allocation failure with its reason.
type Error struct {
	Reason  Reason
	Message string
}

func (e *Error) Error() string { return string(e.Reason) + ": " + e.Message }

func fail(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Message: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of an allocation error, or "" for nil.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err != nil {
		return InvalidRequest
	}
	return ""
}

// Address is an IP held by a Service and the pool it was taken from ("" for
// an address restored from a Service's status that no pool contains).
type Address struct {
	IP   netip.Addr
	Pool string
}

// holding is what the allocator records for a Service that holds IPs.
type holding struct {
	svc   Service
	addrs []Address
	// conflict is set while the Service keeps its IPs although its
	// sharing terms (svc, as it now asks) clash with another holder's.
	conflict error
}

// ipUse is one address in use and the Services that hold it.
type ipUse struct {
	sharingKey string
	backendKey string
	holders    map[string]*holding
}

// Allocator assigns IPs from pools to Services. It is not safe for
// concurrent use; the controller serialises calls.
type Allocator struct {
	pools    map[string]*poolState
	ordered  []*poolState
	services map[string]*holding
	ips      map[netip.Addr]*ipUse
	// shared indexes the IPs held under each sharing key.
	shared map[string]map[netip.Addr]struct{}
}

// New returns an empty allocator.
func New() *Allocator {
	return &Allocator{
		pools:    map[string]*poolState{},
		services: map[string]*holding{},
		ips:      map[netip.Addr]*ipUse{},
		shared:   map[string]map[netip.Addr]struct{}{},
	}
}

// SetPools replaces the pool configuration. Addresses already held stay with
// their Services, even when no pool contains them any more (they become
// orphans, see Usage).
func (a *Allocator) SetPools(pools []Pool) {
	a.pools = make(map[string]*poolState, len(pools))
	a.ordered = a.ordered[:0]
	for _, p := range pools {
		ps := newPoolState(p)
		a.pools[p.Name] = ps
		a.ordered = append(a.ordered, ps)
	}
	slices.SortFunc(a.ordered, poolOrder)
	for ip := range a.ips {
		for _, ps := range a.ordered {
			if ps.contains(ip) {
				ps.fam[famIndex(FamilyOf(ip))].used++
			}
		}
	}
}

// Assigned returns the addresses a Service holds, in the order they were
// assigned (primary family first).
func (a *Allocator) Assigned(key string) []Address {
	h := a.services[key]
	if h == nil {
		return nil
	}
	return slices.Clone(h.addrs)
}

// Restore records that a Service already holds ips, as read from its status
// when the controller starts, so that a restart never moves an IP. The IPs
// need not lie in any pool. It fails, recording nothing, when an IP is held by
// another Service that may not share it; the caller then allocates afresh.
func (a *Allocator) Restore(s Service, ips []netip.Addr) error {
	a.Release(s.Key)
	if len(ips) == 0 {
		return nil
	}
	for _, ip := range ips {
		if err := a.canShare(ip, &s); err != nil {
			return err
		}
	}
	h := &holding{svc: cloneService(s)}
	for _, ip := range ips {
		pool := ""
		if ps := a.pools[s.Pool]; ps != nil && ps.contains(ip) {
			pool = ps.Name
		} else if ps := a.firstContaining(ip); ps != nil {
			pool = ps.Name
		}
		a.take(h, ip, pool)
	}
	a.services[s.Key] = h
	return nil
}

// Assign gives a Service the IPs it asks for. A Service that already holds
// IPs that still answer its request keeps them, also when only its sharing
// terms (sharing key, backend key, ports) changed and the sharing rules
// still allow it; otherwise its IPs are released and new ones allocated.
// When only its sharing terms changed and they now clash with another
// holder, the Service keeps its IPs under its old terms: Assign returns
// them with the SharingConflict error, and the Service gets them for its
// new terms once the clash is gone. On any other failure the Service holds
// nothing.
func (a *Allocator) Assign(s Service) ([]Address, error) {
	if len(s.Families) == 0 {
		// Without families, the requested IPs say which; else IPv4.
		for _, ip := range s.RequestedIPs {
			if !slices.Contains(s.Families, FamilyOf(ip)) {
				s.Families = append(s.Families, FamilyOf(ip))
			}
		}
		if len(s.Families) == 0 {
			s.Families = []Family{IPv4}
		}
	}
	if h := a.services[s.Key]; h != nil {
		if a.satisfies(h, &s) {
			for _, ad := range h.addrs {
				a.rekey(ad.IP, &s)
			}
			h.svc, h.conflict = cloneService(s), nil
			a.topUp(h)
			return slices.Clone(h.addrs), nil
		}
		if a.fits(h, &s) {
			// Only the sharing terms changed, and they clash: the IP
			// stays (PRODUCT.md: only type, class, requested IPs, pool
			// and families may move it). The holding records the terms
			// now asked for, so that the others' edits can resolve the
			// clash.
			for _, ad := range h.addrs {
				if err := a.canShare(ad.IP, &s); err != nil {
					// Whatever the clash (a sharing key dropped
					// counts too), it is one of sharing terms.
					if e, ok := err.(*Error); ok && e.Reason != SharingConflict {
						err = fail(SharingConflict, "%s, and no longer under a common sharing key", e.Message)
					}
					h.svc, h.conflict = cloneService(s), err
					return slices.Clone(h.addrs), err
				}
			}
		}
		a.Release(s.Key)
	}
	h := &holding{svc: cloneService(s)}
	var err error
	if len(s.RequestedIPs) > 0 {
		err = a.assignRequested(h)
	} else {
		err = a.assignAuto(h)
	}
	if err != nil {
		a.releaseHolding(h)
		return nil, err
	}
	a.services[s.Key] = h
	return slices.Clone(h.addrs), nil
}

// Release frees every IP the Service holds. Releasing a Service that holds
// nothing is a no-op.
func (a *Allocator) Release(key string) {
	if h := a.services[key]; h != nil {
		a.releaseHolding(h)
		delete(a.services, key)
	}
}

func (a *Allocator) releaseHolding(h *holding) {
	for _, ad := range h.addrs {
		u := a.ips[ad.IP]
		if u == nil {
			continue
		}
		delete(u.holders, h.svc.Key)
		if len(u.holders) > 0 {
			continue
		}
		delete(a.ips, ad.IP)
		if u.sharingKey != "" {
			delete(a.shared[u.sharingKey], ad.IP)
			if len(a.shared[u.sharingKey]) == 0 {
				delete(a.shared, u.sharingKey)
			}
		}
		for _, ps := range a.ordered {
			if ps.contains(ad.IP) {
				ps.fam[famIndex(FamilyOf(ad.IP))].used--
				ps.released(ad.IP)
			}
		}
	}
	h.addrs = nil
}

// take records that h holds ip, taken from pool.
func (a *Allocator) take(h *holding, ip netip.Addr, pool string) {
	h.addrs = append(h.addrs, Address{IP: ip, Pool: pool})
	u := a.ips[ip]
	if u == nil {
		u = &ipUse{sharingKey: h.svc.SharingKey, backendKey: h.svc.BackendKey, holders: map[string]*holding{}}
		a.ips[ip] = u
		if u.sharingKey != "" {
			if a.shared[u.sharingKey] == nil {
				a.shared[u.sharingKey] = map[netip.Addr]struct{}{}
			}
			a.shared[u.sharingKey][ip] = struct{}{}
		}
		for _, ps := range a.ordered {
			if ps.contains(ip) {
				ps.fam[famIndex(FamilyOf(ip))].used++
			}
		}
	}
	u.holders[h.svc.Key] = h
}

func (a *Allocator) inUse(ip netip.Addr) bool {
	_, ok := a.ips[ip]
	return ok
}

// canShare reports whether s may hold ip alongside its current holders.
func (a *Allocator) canShare(ip netip.Addr, s *Service) error {
	u := a.ips[ip]
	if u == nil {
		return nil
	}
	others := 0
	for key := range u.holders {
		if key != s.Key {
			others++
		}
	}
	if others == 0 {
		return nil
	}
	// Judged against each other holder's terms as it now asks for them
	// (a holder kept in a clash asks for new ones).
	for key, h := range u.holders {
		if key == s.Key {
			continue
		}
		if s.SharingKey == "" || h.svc.SharingKey == "" {
			return fail(RequestedIPInUse, "%s is in use by %s", ip, holderNames(u, s.Key))
		}
		if s.SharingKey != h.svc.SharingKey {
			return fail(SharingConflict, "%s is shared under another sharing key by %s", ip, holderNames(u, s.Key))
		}
		if s.BackendKey != h.svc.BackendKey {
			return fail(SharingConflict, "%s is held by %s with a different externalTrafficPolicy or selector", ip, holderNames(u, s.Key))
		}
		for _, p := range s.Ports {
			if slices.Contains(h.svc.Ports, p) {
				return fail(SharingConflict, "%s: port %d/%s is already used by %s", ip, p.Port, p.Protocol, key)
			}
		}
	}
	return nil
}

func holderNames(u *ipUse, except string) string {
	var names []string
	for key := range u.holders {
		if key != except {
			names = append(names, key)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// satisfies reports whether what h holds still answers request s, so the
// Service keeps its IPs.
func (a *Allocator) satisfies(h *holding, s *Service) bool {
	for _, ad := range h.addrs {
		if err := a.canShare(ad.IP, s); err != nil {
			return false
		}
	}
	return a.fits(h, s)
}

// rekey records a sole holder's new sharing terms on its IP, so the next
// Service that shares it is judged by them.
func (a *Allocator) rekey(ip netip.Addr, s *Service) {
	u := a.ips[ip]
	if u == nil || len(u.holders) != 1 || (u.sharingKey == s.SharingKey && u.backendKey == s.BackendKey) {
		return
	}
	if u.sharingKey != "" {
		delete(a.shared[u.sharingKey], ip)
		if len(a.shared[u.sharingKey]) == 0 {
			delete(a.shared, u.sharingKey)
		}
	}
	u.sharingKey, u.backendKey = s.SharingKey, s.BackendKey
	if u.sharingKey != "" {
		if a.shared[u.sharingKey] == nil {
			a.shared[u.sharingKey] = map[netip.Addr]struct{}{}
		}
		a.shared[u.sharingKey][ip] = struct{}{}
	}
}

// fits reports whether the IPs held answer the request's pool, requested
// IPs and families, whatever its sharing terms.
func (a *Allocator) fits(h *holding, s *Service) bool {
	if len(h.addrs) == 0 {
		return false
	}
	for _, ad := range h.addrs {
		if s.Pool != "" && ad.Pool != s.Pool {
			return false
		}
	}
	if len(s.RequestedIPs) > 0 {
		if len(s.RequestedIPs) != len(h.addrs) {
			return false
		}
		for _, ip := range s.RequestedIPs {
			// A request that contradicts its own families is not
			// answered by holding the IP: it is an invalid request.
			if !slices.Contains(s.Families, FamilyOf(ip)) || !slices.ContainsFunc(h.addrs, func(ad Address) bool { return ad.IP == ip }) {
				return false
			}
		}
		return true
	}
	held := map[Family]int{}
	for _, ad := range h.addrs {
		held[FamilyOf(ad.IP)]++
	}
	for f, n := range held {
		if n > 1 || !slices.Contains(s.Families, f) {
			return false
		}
	}
	switch s.Policy {
	case SingleStack:
		return len(h.addrs) == 1 && held[s.Families[0]] == 1
	case RequireDualStack:
		return len(held) == len(s.Families)
	default:
		return true
	}
}

// topUp gives a PreferDualStack Service that holds one family the other,
// when a pool now allows it, without touching the IP it holds.
func (a *Allocator) topUp(h *holding) {
	if h.svc.Policy != PreferDualStack || len(h.svc.RequestedIPs) > 0 || len(h.addrs) >= len(h.svc.Families) {
		return
	}
	for _, f := range h.svc.Families {
		if !slices.ContainsFunc(h.addrs, func(ad Address) bool { return FamilyOf(ad.IP) == f }) {
			_ = a.assignFamily(h, f) // best effort: the Service keeps what it has
		}
	}
}

func (a *Allocator) assignRequested(h *holding) error {
	s := &h.svc
	seen := map[Family]bool{}
	for _, ip := range s.RequestedIPs {
		f := FamilyOf(ip)
		if seen[f] {
			return fail(InvalidRequest, "more than one requested IP of family %s", f)
		}
		seen[f] = true
		if !slices.Contains(s.Families, f) {
			return fail(InvalidRequest, "requested IP %s is %s, but the Service's families are %v", ip, f, s.Families)
		}
	}
	for _, ip := range s.RequestedIPs {
		if s.Pool != "" {
			ps := a.pools[s.Pool]
			if ps == nil || !ps.contains(ip) {
				return fail(RequestedIPNotInPool, "%s is not in pool %q", ip, s.Pool)
			}
		}
		var pool *poolState
		found := false
		for _, ps := range a.ordered {
			if ps.Deleting || !ps.contains(ip) || (s.Pool != "" && ps.Name != s.Pool) {
				continue
			}
			found = true
			if ps.admits(s) {
				pool = ps
				break
			}
		}
		if !found {
			return fail(RequestedIPNotInPool, "%s is in no pool", ip)
		}
		if pool == nil {
			return fail(NotAllowed, "%s is in a pool that does not admit this Service", ip)
		}
		if err := a.canShare(ip, s); err != nil {
			return err
		}
		a.take(h, ip, pool.Name)
	}
	return nil
}

func (a *Allocator) assignAuto(h *holding) error {
	s := &h.svc
	families := s.Families
	if s.Policy == SingleStack {
		families = families[:1]
	}
	var first error
	for _, f := range families {
		err := a.assignFamily(h, f)
		if err == nil {
			continue
		}
		if s.Policy == RequireDualStack {
			return err
		}
		if first == nil {
			first = err
		}
	}
	if len(h.addrs) == 0 {
		return first
	}
	return nil
}

// assignFamily gives h one address of family f.
func (a *Allocator) assignFamily(h *holding, f Family) error {
	s := &h.svc
	var candidates []*poolState
	if s.Pool != "" {
		ps := a.pools[s.Pool]
		switch {
		case ps == nil || ps.Deleting:
			return fail(NoPool, "pool %q does not exist", s.Pool)
		case !ps.admits(s):
			return fail(NotAllowed, "pool %q does not admit this Service", s.Pool)
		case !ps.hasFamily(f):
			return fail(NoPool, "pool %q has no %s addresses", s.Pool, f)
		}
		candidates = []*poolState{ps}
	} else {
		for _, ps := range a.ordered {
			if ps.AutoAssign && !ps.Deleting && ps.hasFamily(f) && ps.admits(s) {
				candidates = append(candidates, ps)
			}
		}
		if len(candidates) == 0 {
			return fail(NoPool, "no pool with automatic assignment of %s addresses admits this Service", f)
		}
	}
	if s.SharingKey != "" {
		// Join a compatible Service that already holds an address under the
		// same key, lowest address first so every run picks the same one.
		ips := slices.SortedFunc(maps.Keys(a.shared[s.SharingKey]), netip.Addr.Compare)
		for _, ip := range ips {
			if FamilyOf(ip) != f || a.canShare(ip, s) != nil {
				continue
			}
			for _, ps := range candidates {
				if ps.contains(ip) {
					a.take(h, ip, ps.Name)
					return nil
				}
			}
		}
	}
	for _, ps := range candidates {
		if ip, ok := ps.findFree(f, a.inUse); ok {
			a.take(h, ip, ps.Name)
			return nil
		}
	}
	names := make([]string, len(candidates))
	for i, ps := range candidates {
		names[i] = ps.Name
	}
	return fail(PoolExhausted, "no free %s address in pool(s) %s", f, strings.Join(names, ", "))
}

func (a *Allocator) firstContaining(ip netip.Addr) *poolState {
	for _, ps := range a.ordered {
		if ps.contains(ip) {
			return ps
		}
	}
	return nil
}

func cloneService(s Service) Service {
	s.Families = slices.Clone(s.Families)
	s.RequestedIPs = slices.Clone(s.RequestedIPs)
	s.Ports = slices.Clone(s.Ports)
	return s
}

// FamilyUsage counts a pool's addresses of one family. Total saturates at
// the largest uint64 for huge IPv6 pools.
type FamilyUsage struct {
	Total, Used uint64
}

// Usage describes one pool's use.
type Usage struct {
	IPv4, IPv6 FamilyUsage
	// Holders are the Services holding addresses that lie in the pool.
	Holders []string
	// Orphans are the Services holding addresses taken from the pool that no
	// longer lie in it.
	Orphans []string
}

// Usage returns the use of the named pool; ok is false for an unknown pool.
func (a *Allocator) Usage(pool string) (u Usage, ok bool) {
	ps := a.pools[pool]
	if ps == nil {
		return Usage{}, false
	}
	u.IPv4 = FamilyUsage{Total: ps.fam[0].total, Used: ps.fam[0].used}
	u.IPv6 = FamilyUsage{Total: ps.fam[1].total, Used: ps.fam[1].used}
	for key, h := range a.services {
		holder, orphan := false, false
		for _, ad := range h.addrs {
			switch {
			case ps.contains(ad.IP):
				holder = true
			case ad.Pool == pool:
				orphan = true
			}
		}
		if holder {
			u.Holders = append(u.Holders, key)
		}
		if orphan {
			u.Orphans = append(u.Orphans, key)
		}
	}
	slices.Sort(u.Holders)
	slices.Sort(u.Orphans)
	return u, true
}

// Overlaps returns, for each pool that shares addresses with others, the
// names of those others, sorted.
func Overlaps(pools []Pool) map[string][]string {
	out := map[string][]string{}
	merged := make([][]Range, len(pools))
	for i, p := range pools {
		merged[i] = mergeRanges(p.Addresses)
	}
	for i := range pools {
		for j := i + 1; j < len(pools); j++ {
			if rangesOverlap(merged[i], merged[j]) {
				out[pools[i].Name] = append(out[pools[i].Name], pools[j].Name)
				out[pools[j].Name] = append(out[pools[j].Name], pools[i].Name)
			}
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

func rangesOverlap(a, b []Range) bool {
	for _, x := range a {
		for _, y := range b {
			if overlap(x, y) {
				return true
			}
		}
	}
	return false
}
