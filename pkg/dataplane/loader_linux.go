//go:build linux

package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/bpf"
	"github.com/ironlb/ironlb/pkg/maglev"
)

// Dataplane is the loaded program and its maps.
type Dataplane struct {
	opts Options
	log  logr.Logger
	objs bpf.LbObjects
	ring *ebpf.MapSpec

	mu   sync.Mutex
	self Self
	// ids numbers the ports (vip_info.service_id), nodes the ring nodes;
	// both are read back from the pinned maps on start, and both are
	// reused once free.
	ids   map[Key]uint32
	nodes map[netip.Addr]uint32
	rings map[uint32]uint64 // id -> hash of the ring last written
	// resolved are the ring nodes with a managed neighbour entry.
	resolved map[netip.Addr]bool
	sets     map[uint32]uint64 // id -> hash of the backends last written
	// members are the node indexes written in ring_members, per id.
	members map[uint32]map[uint32]bool
	// gens are the ports' vip_info.gen: bumped when their ring, local
	// endpoints or members change, so conntrack checks its entries.
	gens map[uint32]uint32
	// acls are the source-range lists written in source_ranges, by
	// their canonical text, with their ids.
	acls    map[string]uint32
	aclNets map[uint32][]netip.Prefix
	// peers are the node addresses written in tunnel_peers.
	peers map[netip.Addr]bool
	// last is what the last Apply was given, for Dump.
	last []Entry
}

const bpfFSMagic = 0xcafe4a11

// Open loads the program, reusing the maps pinned under opts.PinDir, and
// attaches it to opts.Interfaces, replacing a program a previous speaker
// left there without a gap.
func Open(log logr.Logger, opts Options) (*Dataplane, error) {
	if !slices.Contains(maglev.Sizes, opts.RingSize) {
		return nil, fmt.Errorf("maglev table size %d is not one of %v", opts.RingSize, maglev.Sizes)
	}
	if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
		return nil, fmt.Errorf("pin directory: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(opts.PinDir, &st); err != nil {
		return nil, fmt.Errorf("pin directory: %w", err)
	}
	if st.Type != bpfFSMagic {
		return nil, fmt.Errorf("%s is not on a bpffs mount: mount one (mount -t bpf bpf /sys/fs/bpf) or choose --bpf-pin-dir", opts.PinDir)
	}
	d := &Dataplane{opts: opts, log: log, ids: map[Key]uint32{}, nodes: map[netip.Addr]uint32{},
		rings: map[uint32]uint64{}, sets: map[uint32]uint64{}, resolved: map[netip.Addr]bool{},
		members: map[uint32]map[uint32]bool{}, gens: map[uint32]uint32{},
		acls: map[string]uint32{}, aclNets: map[uint32][]netip.Prefix{}, peers: map[netip.Addr]bool{}}
	if err := d.load(); err != nil {
		return nil, err
	}
	if err := d.recover(); err != nil {
		_ = d.objs.Close()
		return nil, err
	}
	for _, name := range opts.Interfaces {
		if err := d.attach(name); err != nil {
			_ = d.objs.Close()
			return nil, err
		}
	}
	return d, nil
}

// load loads the collection with its maps pinned by name. Pinned maps of
// another shape (a new version of the program, another ring size) are
// replaced: the flows they held are lost, which the log says.
func (d *Dataplane) load() error {
	for attempt := 0; ; attempt++ {
		spec, err := bpf.LoadLb()
		if err != nil {
			return err
		}
		spec.Maps["rings"].InnerMap.MaxEntries = d.opts.RingSize
		for _, m := range []string{"ct1", "ct2", "revnat"} {
			spec.Maps[m].MaxEntries = d.opts.Flows
		}
		for _, m := range spec.Maps {
			if m.Name != "" && !strings.HasPrefix(m.Name, ".") {
				m.Pinning = ebpf.PinByName
			}
		}
		d.ring = spec.Maps["rings"].InnerMap.Copy()
		err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.opts.PinDir}})
		if err == nil {
			// Maps of another version may have the same sizes and mean
			// something else; a ring size change leaves the outer map
			// compatible but its inner maps are not: start over.
			var cfg bpf.LbSettings
			e := d.objs.Config.Lookup(uint32(0), &cfg)
			switch {
			case e != nil || cfg.RingSize == 0 || attempt > 0:
				return nil
			case cfg.Layout != bpf.MapsLayout:
				_ = d.objs.Close()
				err = fmt.Errorf("pinned maps of layout %d, this version uses %d: %w", cfg.Layout, bpf.MapsLayout, ebpf.ErrMapIncompatible)
			case cfg.RingSize != d.opts.RingSize:
				_ = d.objs.Close()
				err = fmt.Errorf("ring size %d, pinned maps have %d: %w", d.opts.RingSize, cfg.RingSize, ebpf.ErrMapIncompatible)
			default:
				return nil
			}
		}
		if !errors.Is(err, ebpf.ErrMapIncompatible) || attempt > 0 {
			var ve *ebpf.VerifierError
			if errors.As(err, &ve) {
				return fmt.Errorf("load the data plane: %+v", ve)
			}
			return fmt.Errorf("load the data plane: %w", err)
		}
		d.log.Info("the pinned maps do not fit this version: replacing them; established flows through this node may reset", "reason", err.Error())
		if err := removeMapPins(d.opts.PinDir); err != nil {
			return err
		}
	}
}

func removeMapPins(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "link_") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// recover reads back the ids and node indexes a previous speaker wrote.
func (d *Dataplane) recover() error {
	var k bpf.LbVipKey
	var v bpf.LbVipInfo
	it := d.objs.Vips.Iterate()
	for it.Next(&k, &v) {
		key := Key{VIP: bpf.AddrFrom(k.Addr, k.Family), Port: bpf.PortFrom(k.Port), Proto: k.Proto}
		d.ids[key] = v.ServiceId
		// Unknown contents: the first Apply rewrites or removes them.
		d.rings[v.ServiceId], d.sets[v.ServiceId] = 0, 0
		d.gens[v.ServiceId] = v.Gen
		if v.Acl != 0 {
			// An unknown list: the first Apply writes a new one and
			// then removes this.
			d.acls[fmt.Sprintf("recovered %d", v.Acl)] = v.Acl
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vips: %w", err)
	}
	var mk bpf.LbMemberKey
	var one uint32
	it = d.objs.RingMembers.Iterate()
	for it.Next(&mk, &one) {
		if d.members[mk.ServiceId] == nil {
			d.members[mk.ServiceId] = map[uint32]bool{}
		}
		d.members[mk.ServiceId][mk.Node] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read ring members: %w", err)
	}
	var pk bpf.LbPeerKey
	it = d.objs.TunnelPeers.Iterate()
	for it.Next(&pk, &one) {
		d.peers[bpf.AddrFrom(pk.Addr, pk.Family)] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read tunnel peers: %w", err)
	}
	var idx uint32
	var n bpf.LbNodeInfo
	it = d.objs.Nodes.Iterate()
	for it.Next(&idx, &n) {
		if n.Family != 0 {
			d.nodes[bpf.AddrFrom(n.Addr, n.Family)] = idx
		}
	}
	return it.Err()
}

func (d *Dataplane) xdpFlags() link.XDPAttachFlags {
	switch d.opts.XDPMode {
	case "native":
		return link.XDPDriverMode
	case "generic":
		return link.XDPGenericMode
	}
	return 0
}

// attach puts both programs on an interface: it updates the links a
// previous speaker pinned (an atomic swap), or creates and pins them.
func (d *Dataplane) attach(name string) error {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	for _, a := range []struct {
		pin    string
		prog   *ebpf.Program
		create func() (link.Link, error)
	}{
		{"link_xdp_" + name, d.objs.IronlbXdp, func() (link.Link, error) {
			return link.AttachXDP(link.XDPOptions{Program: d.objs.IronlbXdp, Interface: iface.Index, Flags: d.xdpFlags()})
		}},
		{"link_tc_egress_" + name, d.objs.IronlbTcEgress, func() (link.Link, error) {
			return link.AttachTCX(link.TCXOptions{Program: d.objs.IronlbTcEgress, Interface: iface.Index, Attach: ebpf.AttachTCXEgress})
		}},
	} {
		pin := filepath.Join(d.opts.PinDir, a.pin)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			err = l.Update(a.prog)
			if err == nil {
				_ = l.Close()
				continue
			}
			d.log.Info("replacing a pinned link that cannot be updated", "link", a.pin, "reason", err.Error())
			_ = l.Unpin()
			_ = l.Close()
		}
		l, err := a.create()
		if err != nil {
			return fmt.Errorf("attach %s: %w", a.pin, err)
		}
		if err := l.Pin(pin); err != nil {
			_ = l.Close()
			return fmt.Errorf("pin %s: %w", a.pin, err)
		}
		_ = l.Close()
	}
	return nil
}

// Close releases this process's handles. The programs stay attached and
// the maps pinned: the node keeps forwarding until a new speaker takes
// over, or Cleanup removes everything.
func (d *Dataplane) Close() error {
	return d.objs.Close()
}

// Cleanup detaches the programs and removes every pin under dir: what
// `ironlb-speaker --cleanup` does when ironlb is uninstalled.
func Cleanup(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), "link_") {
			if l, err := link.LoadPinnedLink(p, nil); err == nil {
				errs = append(errs, l.Unpin())
				_ = l.Close() // the last reference: detached
				continue
			}
		}
		errs = append(errs, os.Remove(p))
	}
	errs = append(errs, os.Remove(dir))
	return errors.Join(errs...)
}

// ringHash and setHash fingerprint what was last written, to skip
// rewriting an unchanged ring (16 381 slots by default) on every sync.
func ringHash(e Entry) uint64 {
	h := fnv.New64a()
	b := make([]byte, 0, 4*len(e.Ring)+16*len(e.RingNodes))
	for _, v := range e.Ring {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	for _, a := range e.RingNodes {
		b = append(b, a.AsSlice()...)
	}
	_, _ = h.Write(b)
	return h.Sum64()
}

func setHash(bs []Backend, ready int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte{byte(ready)})
	for _, b := range bs {
		_, _ = h.Write(b.Addr.AsSlice())
		_, _ = h.Write([]byte{byte(b.Port >> 8), byte(b.Port)})
	}
	return h.Sum64()
}

// Apply makes the maps hold entries and nothing else, lists the live nodes
// (a TCP flow stays on its node while the node lives), opens encapsulated
// packets from the nodes' addresses only, and refreshes the heartbeat. A ring or a set of endpoints is written only when it
// changed; a ring is filled in a new map and swapped in whole; a port's
// generation is bumped after its ring, endpoints and members are written.
func (d *Dataplane) Apply(self Self, nodes []Node, entries []Entry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.self = self
	d.last = entries
	cfg := bpf.LbSettings{RingSize: d.opts.RingSize, Mtu: d.opts.MTU, Layout: bpf.MapsLayout,
		Heartbeat: monotonicCoarse(), StaleAfter: uint64(d.opts.StaleAfter)}
	if self.V4.IsValid() {
		cfg.Self4 = bpf.Addr(self.V4)[0]
	}
	if self.V6.IsValid() {
		cfg.Self6 = bpf.Addr(self.V6)
	}
	var errs []error
	// The links first, the flag after: a packet never meets the flag
	// without the links it needs.
	if err := d.putEndpointLinks(entries); err != nil {
		errs = append(errs, err)
	}
	if d.opts.EndpointRedirect {
		cfg.Flags |= bpf.SettingsRedirect
	}
	if err := d.objs.Config.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var peers, live []netip.Addr
	for _, n := range nodes {
		peers = append(peers, n.Addrs...)
		if !n.Dead {
			live = append(live, n.Addrs...)
		}
	}
	errs = append(errs, d.putPeers(peers))
	for _, a := range live {
		if _, err := d.nodeIndex(a.Unmap()); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", a, err))
		}
	}
	// Ports that left first, so new ones can take their ids.
	want := map[Key]bool{}
	for _, e := range entries {
		want[e.Key] = true
	}
	for k, id := range d.ids {
		if !want[k] {
			errs = append(errs, d.remove(k, id))
		}
	}
	acls := map[uint32]bool{}
	for _, e := range entries {
		acl, err := d.put(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Key, err))
		}
		if acl != 0 {
			acls[acl] = true
		}
	}
	errs = append(errs, d.dropACLs(acls), d.dropNodes(entries, live))
	return errors.Join(errs...)
}

// Beat refreshes the heartbeat alone, so a speaker with nothing to change
// keeps its data plane from going stale.
func (d *Dataplane) Beat() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var cfg bpf.LbSettings
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.RingSize == 0 {
		return nil // never applied
	}
	cfg.Heartbeat = monotonicCoarse()
	return d.objs.Config.Put(uint32(0), cfg)
}

// monotonicCoarse reads the clock of bpf_ktime_get_coarse_ns.
func monotonicCoarse() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}

// putPeers makes tunnel_peers hold exactly the given addresses.
func (d *Dataplane) putPeers(peers []netip.Addr) error {
	want := map[netip.Addr]bool{}
	var errs []error
	for _, a := range peers {
		a = a.Unmap()
		want[a] = true
		if !d.peers[a] {
			if err := d.objs.TunnelPeers.Put(bpf.PeerKeyFor(a), uint32(0)); err != nil {
				errs = append(errs, fmt.Errorf("tunnel peer %s: %w", a, err))
				continue
			}
			d.peers[a] = true
		}
	}
	for a := range d.peers {
		if !want[a] {
			errs = append(errs, ignoreNotExist(d.objs.TunnelPeers.Delete(bpf.PeerKeyFor(a))))
			delete(d.peers, a)
		}
	}
	return errors.Join(errs...)
}

// aclKey is the canonical text of a list of source ranges.
func aclKey(ps []netip.Prefix) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.Masked().String()
	}
	slices.Sort(ss)
	return strings.Join(slices.Compact(ss), ",")
}

// acl returns the id of a list of source ranges, writing the list first
// when it is new (VIPs with the same list share it); 0 for no ranges.
func (d *Dataplane) acl(ps []netip.Prefix) (uint32, error) {
	if len(ps) == 0 {
		return 0, nil
	}
	k := aclKey(ps)
	if id, ok := d.acls[k]; ok {
		return id, nil
	}
	used := map[uint32]bool{}
	for _, id := range d.acls {
		used[id] = true
	}
	id := uint32(1)
	for used[id] {
		id++
	}
	for _, p := range ps {
		if err := d.objs.SourceRanges.Put(bpf.RangeKeyFor(id, p), uint32(1)); err != nil {
			for _, q := range ps {
				_ = d.objs.SourceRanges.Delete(bpf.RangeKeyFor(id, q))
			}
			return 0, fmt.Errorf("source range %s: %w", p, err)
		}
	}
	d.acls[k], d.aclNets[id] = id, ps
	return id, nil
}

// dropACLs removes the lists of source ranges no VIP uses any more.
func (d *Dataplane) dropACLs(inUse map[uint32]bool) error {
	var errs []error
	for k, id := range d.acls {
		if inUse[id] {
			continue
		}
		if nets, ok := d.aclNets[id]; ok {
			for _, p := range nets {
				errs = append(errs, ignoreNotExist(d.objs.SourceRanges.Delete(bpf.RangeKeyFor(id, p))))
			}
		} else {
			errs = append(errs, d.dropRecoveredACL(id))
		}
		delete(d.acls, k)
		delete(d.aclNets, id)
	}
	return errors.Join(errs...)
}

// dropRecoveredACL removes a list a previous speaker wrote, whose prefixes
// are found in the trie.
func (d *Dataplane) dropRecoveredACL(id uint32) error {
	var k bpf.LbRangeKey
	var v uint32
	var doomed []bpf.LbRangeKey
	it := d.objs.SourceRanges.Iterate()
	for it.Next(&k, &v) {
		if k.Acl == id {
			doomed = append(doomed, k)
		}
	}
	errs := []error{it.Err()}
	for _, k := range doomed {
		errs = append(errs, ignoreNotExist(d.objs.SourceRanges.Delete(k)))
	}
	return errors.Join(errs...)
}

func (d *Dataplane) put(e Entry) (uint32, error) {
	id, ok := d.ids[e.Key]
	if !ok {
		id = d.freeID()
		if id >= d.objs.Stats.MaxEntries() {
			return 0, errors.New("too many Service ports")
		}
		d.ids[e.Key] = id
		// A reused id must not carry another port's counters.
		_ = d.clearStats(id)
	}
	acl, err := d.acl(e.SourceRanges)
	if err != nil {
		return 0, err
	}
	ringChanged, err := d.putRing(id, e)
	if err != nil {
		return acl, err
	}
	setChanged, err := d.putBackends(id, e.Backends, e.Ready)
	if err != nil {
		return acl, err
	}
	membersChanged, err := d.putMembers(id, e.Members)
	if err != nil {
		return acl, err
	}
	if ringChanged || setChanged || membersChanged || !ok {
		d.gens[id]++
	}
	var flags uint32
	if e.Affinity {
		flags |= bpf.VIPAffinity
	}
	if e.Local {
		flags |= bpf.VIPLocal
	}
	info := bpf.LbVipInfo{ServiceId: id, Flags: flags, Acl: acl, Gen: d.gens[id], AffinityTimeout: e.AffinityTimeout}
	return acl, d.objs.Vips.Put(bpf.VipKeyFor(e.Key.VIP, e.Key.Port, e.Key.Proto), info)
}

// freeID returns the lowest port id no port uses.
func (d *Dataplane) freeID() uint32 {
	used := make(map[uint32]bool, len(d.ids))
	for _, id := range d.ids {
		used[id] = true
	}
	id := uint32(1)
	for used[id] {
		id++
	}
	return id
}

// putMembers makes ring_members list exactly the given nodes for the
// port, and reports whether that changed anything.
func (d *Dataplane) putMembers(id uint32, addrs []netip.Addr) (bool, error) {
	want := map[uint32]bool{}
	for _, a := range addrs {
		n, err := d.nodeIndex(a)
		if err != nil {
			return false, err
		}
		want[n] = true
	}
	have := d.members[id]
	changed := false
	for n := range want {
		if !have[n] {
			if err := d.objs.RingMembers.Put(bpf.LbMemberKey{ServiceId: id, Node: n}, uint32(1)); err != nil {
				return changed, fmt.Errorf("ring member: %w", err)
			}
			changed = true
		}
	}
	for n := range have {
		if !want[n] {
			if err := ignoreNotExist(d.objs.RingMembers.Delete(bpf.LbMemberKey{ServiceId: id, Node: n})); err != nil {
				return changed, fmt.Errorf("ring member: %w", err)
			}
			changed = true
		}
	}
	if len(want) == 0 {
		delete(d.members, id)
	} else {
		d.members[id] = want
	}
	return changed, nil
}

// dropNodes clears the node indexes of nodes that are neither live nor
// used by a ring or a member list, and frees them.
func (d *Dataplane) dropNodes(entries []Entry, live []netip.Addr) error {
	used := map[netip.Addr]bool{}
	for _, a := range live {
		used[a.Unmap()] = true
	}
	for _, e := range entries {
		for _, a := range e.RingNodes {
			used[a] = true
		}
		for _, a := range e.Members {
			used[a] = true
		}
	}
	var errs []error
	for a, i := range d.nodes {
		if !used[a] {
			errs = append(errs, ignoreNotExist(d.objs.Nodes.Put(i, bpf.LbNodeInfo{})))
			delete(d.nodes, a)
			delete(d.resolved, a)
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) clearStats(id uint32) error {
	zero := make([]bpf.LbServiceStats, ebpf.MustPossibleCPU())
	return d.objs.Stats.Put(id, zero)
}

func (d *Dataplane) nodeIndex(a netip.Addr) (uint32, error) {
	if i, ok := d.nodes[a]; ok {
		return i, nil
	}
	used := map[uint32]bool{}
	for _, i := range d.nodes {
		used[i] = true
	}
	for i := uint32(1); i < d.objs.Nodes.MaxEntries(); i++ {
		if !used[i] {
			if err := d.objs.Nodes.Put(i, bpf.LbNodeInfo{Addr: bpf.Addr(a), Family: bpf.FamilyOf(a)}); err != nil {
				return 0, err
			}
			d.nodes[a] = i
			return i, nil
		}
	}
	return 0, errors.New("too many nodes")
}

func (d *Dataplane) putRing(id uint32, e Entry) (bool, error) {
	if e.Ring == nil {
		if _, ok := d.rings[id]; ok {
			delete(d.rings, id)
			return true, ignoreNotExist(d.objs.Rings.Delete(id))
		}
		return false, nil
	}
	h := ringHash(e)
	if old, ok := d.rings[id]; ok && old == h {
		return false, nil
	}
	idx := make([]uint32, len(e.RingNodes))
	for i, a := range e.RingNodes {
		if !d.resolved[a] && a != d.self.V4 && a != d.self.V6 {
			if err := keepResolved(a); err != nil {
				d.log.Error(err, "the next hop to a node is not kept resolved; its flows may drop until the kernel resolves it", "node", a)
			} else {
				d.resolved[a] = true
			}
		}
		n, err := d.nodeIndex(a)
		if err != nil {
			return false, err
		}
		idx[i] = n
	}
	ring, err := ebpf.NewMap(d.ring)
	if err != nil {
		return false, fmt.Errorf("ring: %w", err)
	}
	defer func() { _ = ring.Close() }()
	keys := make([]uint32, len(e.Ring))
	vals := make([]uint32, len(e.Ring))
	for slot, b := range e.Ring {
		keys[slot], vals[slot] = uint32(slot), idx[b]
	}
	if _, err := ring.BatchUpdate(keys, vals, nil); err != nil {
		return false, fmt.Errorf("fill ring: %w", err)
	}
	if err := d.objs.Rings.Put(id, ring); err != nil {
		return false, fmt.Errorf("swap ring: %w", err)
	}
	d.rings[id] = h
	return true, nil
}

func (d *Dataplane) putBackends(id uint32, bs []Backend, ready int) (bool, error) {
	if len(bs) == 0 {
		if _, ok := d.sets[id]; ok {
			delete(d.sets, id)
			return true, ignoreNotExist(d.objs.Backends.Delete(id))
		}
		return false, nil
	}
	h := setHash(bs, ready)
	if old, ok := d.sets[id]; ok && old == h {
		return false, nil
	}
	var set bpf.LbBackendSet
	for i, b := range bs {
		if i >= len(set.Be) {
			break
		}
		set.Be[i] = bpf.LbBackend{Addr: bpf.Addr(b.Addr), Port: bpf.Port(b.Port), Family: bpf.FamilyOf(b.Addr)}
		set.Count++
	}
	set.Ready = uint32(min(ready, int(set.Count)))
	if err := d.objs.Backends.Put(id, set); err != nil {
		return false, fmt.Errorf("backends: %w", err)
	}
	d.sets[id] = h
	return true, nil
}

// putEndpointLinks makes endpoint_links list the veths in front of the
// local endpoints, or nothing when redirection is off. The kernel drops a
// link's entry when the link goes.
func (d *Dataplane) putEndpointLinks(entries []Entry) error {
	want := map[uint32]bool{}
	var err error
	if d.opts.EndpointRedirect {
		var addrs []netip.Addr
		seen := map[netip.Addr]bool{}
		for _, e := range entries {
			for _, b := range e.Backends {
				if !seen[b.Addr] {
					seen[b.Addr] = true
					addrs = append(addrs, b.Addr)
				}
			}
		}
		want, err = endpointLinks(addrs)
	}
	var have []uint32
	var k, v uint32
	it := d.objs.EndpointLinks.Iterate()
	for it.Next(&k, &v) {
		have = append(have, k)
	}
	errs := []error{err, it.Err()}
	for _, k := range have {
		if !want[k] {
			errs = append(errs, ignoreNotExist(d.objs.EndpointLinks.Delete(k)))
		}
	}
	for k := range want {
		if !slices.Contains(have, k) {
			if err := d.objs.EndpointLinks.Put(k, k); err != nil {
				errs = append(errs, fmt.Errorf("endpoint link %d: %w", k, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) remove(k Key, id uint32) error {
	err := ignoreNotExist(d.objs.Vips.Delete(bpf.VipKeyFor(k.VIP, k.Port, k.Proto)))
	err = errors.Join(err, ignoreNotExist(d.objs.Rings.Delete(id)), ignoreNotExist(d.objs.Backends.Delete(id)))
	_, merr := d.putMembers(id, nil)
	delete(d.ids, k)
	delete(d.rings, id)
	delete(d.sets, id)
	delete(d.gens, id)
	return errors.Join(err, merr)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Dump reports what the data plane holds.
func (d *Dataplane) Dump() Dump {
	d.mu.Lock()
	out := Dump{Self: d.self, RingSize: d.opts.RingSize, Ports: dumpPorts(d.last, d.ids)}
	d.mu.Unlock()
	out.Conntrack, out.Capacity = map[string]int{}, map[string]int{}
	for table, m := range map[string]*ebpf.Map{"tier1": d.objs.Ct1, "tier2": d.objs.Ct2, "revnat": d.objs.Revnat, "affinity": d.objs.Affinity} {
		out.Conntrack[table] = countKeys(m)
		out.Capacity[table] = int(m.MaxEntries())
	}
	var k, v uint32
	it := d.objs.EndpointLinks.Iterate()
	for it.Next(&k, &v) {
		out.EndpointLinks++
	}
	return out
}
