package ipam

import (
	"cmp"
	"container/heap"
	"net/netip"
	"slices"
)

// Matcher reports whether a set of labels is selected. The controller builds
// it from a Kubernetes label selector; nil selects everything.
type Matcher func(labels map[string]string) bool

// Pool is one IPPool as the allocator sees it.
type Pool struct {
	Name string
	// Addresses are the pool's ranges, in any order; overlapping entries are
	// merged.
	Addresses []Range
	// AutoAssign false means only Services that name this pool or one of its
	// IPs get addresses from it.
	AutoAssign bool
	// AvoidBuggyIPs keeps IPv4 addresses ending in .0 or .255 out of
	// automatic allocation.
	AvoidBuggyIPs bool
	// Priority orders pools that fit a Service: lower first; pools without
	// one come after all pools with one, then by name.
	Priority    int32
	HasPriority bool
	// Namespaces and NamespaceSelector restrict the namespaces the pool
	// serves: a Service's namespace must be listed or selected. Both empty
	// means any namespace.
	Namespaces        []string
	NamespaceSelector Matcher
	// ServiceSelector, when set, must select the Service's labels.
	ServiceSelector Matcher
	// Deleting pools give no new addresses, but their addresses stay with
	// the Services that hold them.
	Deleting bool
}

// admits reports whether the pool's allocateTo rules let s use it.
func (p *Pool) admits(s *Service) bool {
	if len(p.Namespaces) > 0 || p.NamespaceSelector != nil {
		ok := slices.Contains(p.Namespaces, s.Namespace) ||
			(p.NamespaceSelector != nil && p.NamespaceSelector(s.NamespaceLabels))
		if !ok {
			return false
		}
	}
	return p.ServiceSelector == nil || p.ServiceSelector(s.Labels)
}

// poolState is a pool plus what the allocator needs to find free addresses
// fast without materialising them.
type poolState struct {
	Pool
	// fam holds the merged ranges and the free-address search state of each
	// family: index 0 for IPv4, 1 for IPv6.
	fam [2]familyState
}

type familyState struct {
	ranges []Range
	total  uint64
	used   uint64
	// The cursor walks the ranges once, lowest first. Every address before
	// it is either in use or in freed, so the lowest free address is the
	// smaller of freed's minimum and the first unused address at or after
	// the cursor.
	ri   int
	next netip.Addr
	// freed holds addresses before the cursor that were released, possibly
	// with stale entries (taken again since), which are skipped lazily.
	freed addrHeap
}

func famIndex(f Family) int {
	if f == IPv6 {
		return 1
	}
	return 0
}

func newPoolState(p Pool) *poolState {
	ps := &poolState{Pool: p}
	for _, r := range mergeRanges(p.Addresses) {
		fs := &ps.fam[famIndex(r.Family())]
		fs.ranges = append(fs.ranges, r)
	}
	for i := range ps.fam {
		fs := &ps.fam[i]
		for _, r := range fs.ranges {
			n := r.Size()
			if p.AvoidBuggyIPs {
				n -= r.buggyCount()
			}
			fs.total = addSat(fs.total, n)
		}
		if len(fs.ranges) > 0 {
			fs.next = fs.ranges[0].First
		}
	}
	return ps
}

func addSat(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// contains reports whether the address lies in one of the pool's ranges.
func (ps *poolState) contains(a netip.Addr) bool {
	rs := ps.fam[famIndex(FamilyOf(a))].ranges
	i, _ := slices.BinarySearchFunc(rs, a, func(r Range, a netip.Addr) int {
		if r.Last.Less(a) {
			return -1
		}
		if a.Less(r.First) {
			return 1
		}
		return 0
	})
	return i < len(rs) && rs[i].Contains(a)
}

// hasFamily reports whether the pool has addresses of family f.
func (ps *poolState) hasFamily(f Family) bool {
	return len(ps.fam[famIndex(f)].ranges) > 0
}

// findFree returns the lowest address of family f that inUse says is free,
// skipping buggy addresses when the pool avoids them.
func (ps *poolState) findFree(f Family, inUse func(netip.Addr) bool) (netip.Addr, bool) {
	fs := &ps.fam[famIndex(f)]
	usable := func(a netip.Addr) bool { return !inUse(a) && (!ps.AvoidBuggyIPs || !isBuggy(a)) }
	for fs.freed.Len() > 0 {
		a := heap.Pop(&fs.freed).(netip.Addr)
		if usable(a) {
			return a, true
		}
	}
	for fs.ri < len(fs.ranges) {
		r := fs.ranges[fs.ri]
		for fs.next.IsValid() && fs.next.Compare(r.Last) <= 0 {
			a := fs.next
			fs.next = a.Next()
			if usable(a) {
				return a, true
			}
		}
		fs.ri++
		if fs.ri < len(fs.ranges) {
			fs.next = fs.ranges[fs.ri].First
		}
	}
	return netip.Addr{}, false
}

// released tells the search state that a has become free.
func (ps *poolState) released(a netip.Addr) {
	fs := &ps.fam[famIndex(FamilyOf(a))]
	if fs.ri >= len(fs.ranges) || a.Less(fs.next) {
		heap.Push(&fs.freed, a)
	}
}

// poolOrder sorts pools for automatic allocation: pools with a priority
// first, lower numbers first, then by name.
func poolOrder(a, b *poolState) int {
	if a.HasPriority != b.HasPriority {
		if a.HasPriority {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name))
}

// addrHeap is a min-heap of addresses.
type addrHeap []netip.Addr

func (h addrHeap) Len() int           { return len(h) }
func (h addrHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h addrHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *addrHeap) Push(x any)        { *h = append(*h, x.(netip.Addr)) }
func (h *addrHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
