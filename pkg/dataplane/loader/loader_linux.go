//go:build linux

package loader

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
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/bpf"
	"github.com/ironlb/ironlb/pkg/dataplane"
	"github.com/ironlb/ironlb/pkg/maglev"
)

// Dataplane is the loaded program and its maps.
type Dataplane struct {
	opts dataplane.Options
	log  logr.Logger
	objs bpf.LbObjects
	ring *ebpf.MapSpec

	mu   sync.Mutex
	self dataplane.Self
	// ids numbers the ports (vip_info.service_id), nodes the ring nodes;
	// both are read back from the pinned maps on start, and both are
	// reused once free.
	ids   map[dataplane.Key]uint32
	nodes map[netip.Addr]uint32
	// freeIDs are ids below topID that no port uses; topID is one more
	// than the highest id ever given.
	freeIDs []uint32
	topID   uint32
	rings   map[uint32]dataplane.RingID // id -> the ring last written
	// ringMaps are the kernel maps of the rings in use, one per RingID,
	// shared by every port with that ring; ringUsers count the ports.
	ringMaps  map[dataplane.RingID]*ebpf.Map
	ringUsers map[dataplane.RingID]int
	// empty is a ring of zeros (node index 0, no node) that a port's
	// slot gets when its ring goes: an array of maps cannot delete in a
	// batch, and each single delete waits for an RCU grace period.
	empty *ebpf.Map
	// resolved are the ring nodes with a managed neighbour entry.
	resolved map[netip.Addr]bool
	sets     map[uint32]uint64 // id -> hash of the backends last written
	// members are the node indexes written in ring_members, per id.
	members map[uint32]map[uint32]bool
	// gens are the ports' vip_info.gen: set from genSeq when their ring,
	// local endpoints or members change, so conntrack checks its entries.
	// One sequence for all ports: a port that takes a freed id never has
	// a generation the id's last port had, which conntrack entries left
	// from that port (a reused tuple) would take for current.
	gens   map[uint32]uint32
	genSeq uint32
	// prevUntil are the ports' vip_info.prev_until: until then the
	// port's previous ring is in rings_prev (ring history).
	prevUntil map[uint32]uint64
	// changed is when each port's previous ring was last taken (coarse
	// clock): changes within historySettle of it keep that ring.
	changed map[uint32]uint64
	// acls are the source-range lists written in source_ranges, by
	// their canonical text, with their ids.
	acls    map[string]uint32
	aclNets map[uint32][]netip.Prefix
	// lastACL is the last list id given: ids only grow, so a conntrack
	// entry admitted under an id is never admitted by another list that
	// took the id over.
	lastACL uint32
	// peers are the node addresses written in tunnel_peers.
	peers map[netip.Addr]bool
	// last is what the last Apply was given, for Dump.
	last []dataplane.Entry
}

const bpfFSMagic = 0xcafe4a11

// Open loads the program, reusing the maps pinned under opts.PinDir, and
// attaches it to opts.Interfaces, replacing a program a previous speaker
// left there without a gap.
func Open(log logr.Logger, opts dataplane.Options) (*Dataplane, error) {
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
	d := &Dataplane{opts: opts, log: log, ids: map[dataplane.Key]uint32{}, nodes: map[netip.Addr]uint32{},
		rings: map[uint32]dataplane.RingID{}, ringMaps: map[dataplane.RingID]*ebpf.Map{}, ringUsers: map[dataplane.RingID]int{},
		sets: map[uint32]uint64{}, resolved: map[netip.Addr]bool{},
		members: map[uint32]map[uint32]bool{}, gens: map[uint32]uint32{}, prevUntil: map[uint32]uint64{}, changed: map[uint32]uint64{},
		acls: map[string]uint32{}, aclNets: map[uint32][]netip.Prefix{}, peers: map[netip.Addr]bool{}, topID: 1}
	if err := d.load(); err != nil {
		return nil, err
	}
	if err := d.recover(); err != nil {
		_ = d.objs.Close()
		return nil, err
	}
	empty, err := ebpf.NewMap(d.ring)
	if err != nil {
		_ = d.objs.Close()
		return nil, fmt.Errorf("empty ring: %w", err)
	}
	d.empty = empty
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
		spec.Maps["rings_prev"].InnerMap.MaxEntries = d.opts.RingSize
		for _, m := range []string{"ct1", "ct2", "revnat", "shifts"} {
			spec.Maps[m].MaxEntries = d.opts.Flows
		}
		for _, m := range []string{"ct1_new", "ct2_new", "revnat_new"} {
			spec.Maps[m].MaxEntries = d.opts.UnverifiedFlows()
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
			var cfg bpf.LbConfigEntry
			e := d.objs.Config.Lookup(uint32(0), &cfg)
			switch {
			case e != nil || cfg.RingSize == 0 || attempt > 0:
				return d.fillProgs()
			case cfg.Layout != bpf.MapsLayout:
				_ = d.objs.Close()
				err = fmt.Errorf("pinned maps of layout %d, this version uses %d: %w", cfg.Layout, bpf.MapsLayout, ebpf.ErrMapIncompatible)
			case cfg.RingSize != d.opts.RingSize:
				_ = d.objs.Close()
				err = fmt.Errorf("ring size %d, pinned maps have %d: %w", d.opts.RingSize, cfg.RingSize, ebpf.ErrMapIncompatible)
			default:
				return d.fillProgs()
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

// fillProgs puts this version's programs in the (pinned) progs array: the
// SYN-cookie program ironlb_xdp tail-calls, and ironlb_xdp, which it
// hands packets back to. Until then a tail call finds what an earlier
// speaker put there, or nothing (and the packet goes on without cookies).
func (d *Dataplane) fillProgs() error {
	for slot, p := range map[uint32]*ebpf.Program{bpf.ProgCookie: d.objs.IronlbCookie, bpf.ProgMain: d.objs.IronlbXdp} {
		if err := d.objs.Progs.Put(slot, p); err != nil {
			_ = d.objs.Close()
			return fmt.Errorf("load the data plane: progs[%d]: %w", slot, err)
		}
	}
	// A new start may attach in another mode or to other drivers: the
	// cookie program finds out again whether they give it metadata room.
	if err := d.objs.CookiesUnusable.Put(uint32(0), uint32(0)); err != nil {
		_ = d.objs.Close()
		return fmt.Errorf("load the data plane: cookies_unusable: %w", err)
	}
	return nil
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
	// Ports removed before this process started may have had higher
	// generations than any port left: start from the clock, so that a
	// stale entry can pass for current only if the last process made
	// more changes than seconds passed between its start and this one.
	d.genSeq = uint32(time.Now().Unix())
	var k bpf.LbVipKey
	var v bpf.LbVipInfo
	it := d.objs.Vips.Iterate()
	for it.Next(&k, &v) {
		key := dataplane.Key{VIP: bpf.AddrFrom(k.Addr, k.Family), Port: bpf.PortFrom(k.Port), Proto: k.Proto}
		d.ids[key] = v.ServiceId
		d.topID = max(d.topID, v.ServiceId+1)
		// Unknown contents: the first Apply rewrites or removes them.
		d.rings[v.ServiceId], d.sets[v.ServiceId] = dataplane.RingID{}, 0
		d.gens[v.ServiceId] = v.Gen
		d.genSeq = max(d.genSeq, v.Gen)
		if v.PrevUntil != 0 {
			d.prevUntil[v.ServiceId] = v.PrevUntil
		}
		if v.Acl != 0 {
			// An unknown list: the first Apply writes a new one and
			// then removes this.
			d.acls[fmt.Sprintf("recovered %d", v.Acl)] = v.Acl
			d.lastACL = max(d.lastACL, v.Acl)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vips: %w", err)
	}
	used := map[uint32]bool{}
	for _, id := range d.ids {
		used[id] = true
	}
	for id := d.topID - 1; id >= 1; id-- {
		if !used[id] {
			d.freeIDs = append(d.freeIDs, id)
		}
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
	// The program forwards only frames sent to this interface's MAC.
	if len(iface.HardwareAddr) == 6 {
		m := bpf.LbIfMac{Ifindex: uint32(iface.Index)}
		copy(m.Addr[:], iface.HardwareAddr)
		if err := d.objs.IfMacs.Put(bpf.IfMacSlot(iface.Index), m); err != nil {
			return fmt.Errorf("record the MAC of %s: %w", name, err)
		}
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
	for _, m := range d.ringMaps {
		_ = m.Close()
	}
	_ = d.empty.Close()
	return d.objs.Close()
}

// Cleanup detaches the programs, removes every pin under dir and the
// managed neighbour entries the data plane asked the kernel for: what
// `ironlb-speaker --cleanup` does when ironlb is uninstalled.
func Cleanup(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return forgetManaged()
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
	errs = append(errs, os.Remove(dir), forgetManaged())
	return errors.Join(errs...)
}

// setHash fingerprints the endpoints last written, to skip rewriting an
// unchanged set on every sync. (Rings are named by their RingID.)
func setHash(bs []dataplane.Backend, ready int) uint64 {
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
func (d *Dataplane) Apply(self dataplane.Self, nodes []dataplane.Node, entries []dataplane.Entry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.self = self
	d.last = entries
	cfg := bpf.LbConfigEntry{RingSize: d.opts.RingSize, Mtu: d.opts.MTU, Layout: bpf.MapsLayout, NewFlowRate: d.opts.NewFlowRate, SynCookieRate: d.opts.SynCookieRate,
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
		cfg.Flags |= bpf.ConfigRedirect
	}
	if d.opts.RingHistory > 0 {
		cfg.Flags |= bpf.ConfigHistory
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
	var swaps ringSwaps
	want := map[dataplane.Key]bool{}
	for _, e := range entries {
		want[e.Key] = true
	}
	for k, id := range d.ids {
		if !want[k] {
			errs = append(errs, d.remove(k, id, &swaps))
		}
	}
	// Every port's lists, endpoints and members first, its new ring
	// aside; then the rings, swapped in all at once (each swap of an
	// inner map waits for an RCU grace period, a batch waits once); then
	// the VIPs with their new generations.
	acls := map[uint32]bool{}
	var vips []vipWrite
	for _, e := range entries {
		v, err := d.put(e, &swaps)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Key, err))
			continue
		}
		if v.info.Acl != 0 {
			acls[v.info.Acl] = true
		}
		vips = append(vips, v)
	}
	if err := d.commitRings(&swaps); err != nil {
		// The VIPs keep their old generation: their flows look again
		// once a later Apply has swapped the rings in.
		errs = append(errs, err)
		vips = slices.DeleteFunc(vips, func(v vipWrite) bool { return swaps.failed[v.info.ServiceId] })
	}
	errs = append(errs, d.expireHistory())
	for _, v := range vips {
		v.info.PrevUntil = d.prevUntil[v.info.ServiceId]
		if err := d.objs.Vips.Put(v.key, v.info); err != nil {
			errs = append(errs, fmt.Errorf("vip: %w", err))
		}
	}
	errs = append(errs, d.dropACLs(acls), d.dropNodes(entries, live))
	return errors.Join(errs...)
}

// Lacks reports whether entries have a port the maps do not hold yet.
func (d *Dataplane) Lacks(entries []dataplane.Entry) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range entries {
		if _, ok := d.ids[e.Key]; !ok {
			return true
		}
	}
	return false
}

// Beat refreshes the heartbeat alone, so a speaker with nothing to change
// keeps its data plane from going stale.
func (d *Dataplane) Beat() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var cfg bpf.LbConfigEntry
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
	id := d.lastACL + 1
	for id == 0 || used[id] { // after 2^32 lists
		id++
	}
	d.lastACL = id
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

// vipWrite is a vips entry to write once the rings are in.
type vipWrite struct {
	key  bpf.LbVipKey
	info bpf.LbVipInfo
}

// ringSwaps are the ring changes of one Apply, made in one batch: ids get
// the maps fds (rings), dels lose theirs, and released rings lose a user
// once that is done.
type ringSwaps struct {
	ids      []uint32
	fds      []uint32
	rings    []dataplane.RingID
	dels     []uint32
	released []dataplane.RingID
	failed   map[uint32]bool
}

// drop stages the removal of port id's ring.
func (s *ringSwaps) drop(d *Dataplane, id uint32) {
	rid, ok := d.rings[id]
	if !ok {
		return
	}
	delete(d.rings, id)
	s.dels = append(s.dels, id)
	s.released = append(s.released, rid)
}

// put writes everything of a port but its ring (staged in swaps) and its
// vips entry (returned).
func (d *Dataplane) put(e dataplane.Entry, swaps *ringSwaps) (vipWrite, error) {
	id, ok := d.ids[e.Key]
	if !ok {
		id = d.freeID()
		if id >= d.objs.Stats.MaxEntries() {
			d.freeIDs = append(d.freeIDs, id)
			return vipWrite{}, errors.New("too many Service ports")
		}
		d.ids[e.Key] = id
		// A reused id must not carry another port's counters.
		_ = d.clearStats(id)
	}
	acl, err := d.acl(e.SourceRanges)
	if err != nil {
		return vipWrite{}, err
	}
	ringChanged, err := d.stageRing(id, e, swaps)
	if err != nil {
		return vipWrite{}, err
	}
	setChanged, err := d.putBackends(id, e.Backends, e.Ready)
	if err != nil {
		return vipWrite{}, err
	}
	membersChanged, err := d.putMembers(id, e.Members)
	if err != nil {
		return vipWrite{}, err
	}
	if ringChanged || setChanged || membersChanged || !ok {
		d.genSeq++
		d.gens[id] = d.genSeq
	}
	var flags uint32
	if e.Affinity {
		flags |= bpf.VIPAffinity
	}
	if e.Local {
		flags |= bpf.VIPLocal
	}
	return vipWrite{
		key: bpf.VipKeyFor(e.Key.VIP, e.Key.Port, e.Key.Proto),
		info: bpf.LbVipInfo{ServiceId: id, Flags: flags, Acl: acl, Gen: d.gens[id], AffinityTimeout: e.AffinityTimeout,
			SrcLimit: e.NewFlowsPerSource},
	}, nil
}

// freeID returns a port id no port uses: the last one freed, else a new
// one.
func (d *Dataplane) freeID() uint32 {
	if n := len(d.freeIDs); n > 0 {
		id := d.freeIDs[n-1]
		d.freeIDs = d.freeIDs[:n-1]
		return id
	}
	d.topID++
	return d.topID - 1
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
func (d *Dataplane) dropNodes(entries []dataplane.Entry, live []netip.Addr) error {
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

// clearStats zeroes a port id's counters and SYN-cookie state, for a new
// port that takes the id.
func (d *Dataplane) clearStats(id uint32) error {
	zero := make([]bpf.LbServiceStats, ebpf.MustPossibleCPU())
	return errors.Join(d.objs.Stats.Put(id, zero), d.objs.Cookies.Put(id, bpf.LbCookieState{}))
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

// stageRing stages the port's ring in swaps when it changed (a new kernel
// map only for a ring no port has yet), and reports whether it did.
func (d *Dataplane) stageRing(id uint32, e dataplane.Entry, swaps *ringSwaps) (bool, error) {
	if e.Ring == nil {
		if _, ok := d.rings[id]; ok {
			swaps.drop(d, id)
			return true, nil
		}
		return false, nil
	}
	if old, ok := d.rings[id]; ok && old == e.RingID {
		return false, nil
	}
	ring := d.ringMaps[e.RingID]
	if ring == nil {
		var err error
		if ring, err = d.newRing(e); err != nil {
			return false, err
		}
		d.ringMaps[e.RingID] = ring
	}
	swaps.ids = append(swaps.ids, id)
	swaps.fds = append(swaps.fds, uint32(ring.FD()))
	swaps.rings = append(swaps.rings, e.RingID)
	return true, nil
}

// commitRings points the slots of removed rings at the empty ring and
// swaps the staged ones in, all in one batch update (one RCU grace
// period), then forgets the rings no port uses. On failure it marks the
// ports whose swap did not happen.
func (d *Dataplane) commitRings(swaps *ringSwaps) error {
	swaps.failed = map[uint32]bool{}
	var errs []error
	// The removals first: a freed id taken by a new port in the same
	// batch gets its new ring, the later write.
	keys := make([]uint32, 0, len(swaps.dels)+len(swaps.ids))
	fds := make([]uint32, 0, cap(keys))
	for _, id := range swaps.dels {
		keys = append(keys, id)
		fds = append(fds, uint32(d.empty.FD()))
	}
	keys = append(keys, swaps.ids...)
	fds = append(fds, swaps.fds...)
	// Ring history, before the swap: a speaker stopped half-way (a
	// failover kills it) leaves the history in place or the old ring
	// current, never the new ring without the old one kept.
	errs = append(errs, d.keepHistory(swaps.ids))
	if len(keys) > 0 {
		n, err := d.objs.Rings.BatchUpdate(keys, fds, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("swap rings: %w", err))
		}
		n -= len(swaps.dels)
		for i, id := range swaps.ids {
			if i >= n {
				swaps.failed[id] = true
				continue
			}
			if old, ok := d.rings[id]; ok {
				swaps.released = append(swaps.released, old)
			}
			d.rings[id] = swaps.rings[i]
			d.ringUsers[swaps.rings[i]]++
		}
	}
	for _, rid := range swaps.released {
		if rid != (dataplane.RingID{}) { // not a ring a previous process wrote
			d.ringUsers[rid]--
		}
	}
	// Rings no port uses any more (or that a failed batch left unused):
	// this process lets go of them, and the kernel frees them once the
	// outer map holds them nowhere.
	for rid, m := range d.ringMaps {
		if d.ringUsers[rid] <= 0 {
			_ = m.Close()
			delete(d.ringMaps, rid)
			delete(d.ringUsers, rid)
		}
	}
	return errors.Join(errs...)
}

// keepHistory puts the current rings of ids, about to be replaced, in
// rings_prev (in one batch), and writes their VIPs' prev_until. Changes
// in a burst (a drain and the failover it causes, a rolling restart) keep
// the ring from before the burst: the one the flows were placed by. Not a
// ring a previous process wrote (its RingID is unknown): the first Apply
// after a restart replaces every ring with the same one, and the history
// rings_prev holds stays.
func (d *Dataplane) keepHistory(ids []uint32) error {
	if d.opts.RingHistory <= 0 {
		return nil
	}
	now := monotonicCoarse()
	var keys []uint32
	var maps []*ebpf.Map
	defer func() {
		for _, m := range maps {
			_ = m.Close()
		}
	}()
	extended := map[uint32]bool{}
	for _, id := range ids {
		if rid, ok := d.rings[id]; !ok || rid == (dataplane.RingID{}) {
			continue
		}
		if d.prevUntil[id] > now && now-d.changed[id] < uint64(historySettle) {
			extended[id] = true
			continue
		}
		var m *ebpf.Map
		if err := d.objs.Rings.Lookup(id, &m); err != nil {
			continue
		}
		keys, maps = append(keys, id), append(maps, m)
	}
	var errs []error
	if len(keys) > 0 {
		fds := make([]uint32, len(maps))
		for i, m := range maps {
			fds[i] = uint32(m.FD())
		}
		n, err := d.objs.RingsPrev.BatchUpdate(keys, fds, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("ring history: %w", err))
		}
		for _, id := range keys[:max(n, 0)] {
			extended[id] = true
			d.changed[id] = now // the burst starts
		}
	}
	if len(extended) == 0 {
		return errors.Join(errs...)
	}
	for id := range extended {
		d.prevUntil[id] = now + uint64(d.opts.RingHistory)
	}
	// The VIPs learn of it now, with their old generation.
	for k, id := range d.ids {
		if !extended[id] {
			continue
		}
		vk := bpf.VipKeyFor(k.VIP, k.Port, k.Proto)
		var info bpf.LbVipInfo
		if err := d.objs.Vips.Lookup(vk, &info); err != nil {
			continue
		}
		info.PrevUntil = d.prevUntil[id]
		if err := d.objs.Vips.Put(vk, info); err != nil {
			errs = append(errs, fmt.Errorf("ring history: vip: %w", err))
		}
	}
	return errors.Join(errs...)
}

// historySettle is how soon after a ring change others count as the same
// burst: the previous ring stays the one from before the first.
const historySettle = 30 * time.Second

// expireHistory lets go of the previous rings whose time is over.
func (d *Dataplane) expireHistory() error {
	now := monotonicCoarse()
	var errs []error
	for id, until := range d.prevUntil {
		if until > now {
			continue
		}
		delete(d.prevUntil, id)
		errs = append(errs, ignoreNotExist(d.objs.RingsPrev.Delete(id)))
	}
	return errors.Join(errs...)
}

// newRing fills a new kernel map with a ring.
func (d *Dataplane) newRing(e dataplane.Entry) (*ebpf.Map, error) {
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
			return nil, err
		}
		idx[i] = n
	}
	ring, err := ebpf.NewMap(d.ring)
	if err != nil {
		return nil, fmt.Errorf("ring: %w", err)
	}
	// One copy through a mapping of the array: a batch update costs a
	// quarter of a microsecond per slot, 4 ms a ring. The kernel lays
	// array elements out 8-byte aligned, so a 4-byte slot takes 8.
	const stride = 8
	size := (len(e.Ring)*stride + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	mem, err := unix.Mmap(ring.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = ring.Close()
		return nil, fmt.Errorf("map ring: %w", err)
	}
	for slot, b := range e.Ring {
		binary.NativeEndian.PutUint32(mem[slot*stride:], idx[b])
	}
	if err := unix.Munmap(mem); err != nil {
		_ = ring.Close()
		return nil, fmt.Errorf("unmap ring: %w", err)
	}
	return ring, nil
}

func (d *Dataplane) putBackends(id uint32, bs []dataplane.Backend, ready int) (bool, error) {
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
func (d *Dataplane) putEndpointLinks(entries []dataplane.Entry) error {
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

func (d *Dataplane) remove(k dataplane.Key, id uint32, swaps *ringSwaps) error {
	err := ignoreNotExist(d.objs.Vips.Delete(bpf.VipKeyFor(k.VIP, k.Port, k.Proto)))
	err = errors.Join(err, ignoreNotExist(d.objs.Backends.Delete(id)))
	_, merr := d.putMembers(id, nil)
	delete(d.ids, k)
	d.freeIDs = append(d.freeIDs, id)
	swaps.drop(d, id)
	delete(d.sets, id)
	delete(d.gens, id)
	delete(d.prevUntil, id) // rings_prev[id] is ignored while prev_until is 0
	delete(d.changed, id)
	return errors.Join(err, merr)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Dump reports what the data plane holds.
func (d *Dataplane) Dump() dataplane.Dump {
	d.mu.Lock()
	out := dataplane.Dump{Self: d.self, RingSize: d.opts.RingSize, Ports: dataplane.DumpPorts(d.last, d.ids)}
	d.mu.Unlock()
	out.Conntrack, out.Capacity = map[string]int{}, map[string]int{}
	for table, m := range map[string]*ebpf.Map{"tier1": d.objs.Ct1, "tier2": d.objs.Ct2, "revnat": d.objs.Revnat, "affinity": d.objs.Affinity, "proxied": d.objs.Shifts} {
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
