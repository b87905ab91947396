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
	// both are read back from the pinned maps on start.
	ids   map[Key]uint32
	nodes map[netip.Addr]uint32
	rings map[uint32]uint64 // id -> hash of the ring last written
	// resolved are the ring nodes with a managed neighbour entry.
	resolved map[netip.Addr]bool
	sets     map[uint32]uint64 // id -> hash of the backends last written
	nextID   uint32
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
		rings: map[uint32]uint64{}, sets: map[uint32]uint64{}, resolved: map[netip.Addr]bool{}, nextID: 1}
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
			// A ring size change leaves the outer map compatible but
			// its inner maps are not: start over.
			var cfg bpf.LbSettings
			if e := d.objs.Config.Lookup(uint32(0), &cfg); e == nil && cfg.RingSize != 0 && cfg.RingSize != d.opts.RingSize && attempt == 0 {
				_ = d.objs.Close()
				err = fmt.Errorf("ring size %d, pinned maps have %d: %w", d.opts.RingSize, cfg.RingSize, ebpf.ErrMapIncompatible)
			} else {
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
		d.nextID = max(d.nextID, v.ServiceId+1)
		// Unknown contents: the first Apply rewrites or removes them.
		d.rings[v.ServiceId], d.sets[v.ServiceId] = 0, 0
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vips: %w", err)
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

func setHash(bs []Backend) uint64 {
	h := fnv.New64a()
	for _, b := range bs {
		_, _ = h.Write(b.Addr.AsSlice())
		_, _ = h.Write([]byte{byte(b.Port >> 8), byte(b.Port)})
	}
	return h.Sum64()
}

// Apply makes the maps hold entries and nothing else. A ring or a set of
// endpoints is written only when it changed; a ring is filled in a new map
// and swapped in whole.
func (d *Dataplane) Apply(self Self, entries []Entry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.self = self
	d.last = entries
	cfg := bpf.LbSettings{RingSize: d.opts.RingSize, Mtu: d.opts.MTU}
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
	want := map[Key]bool{}
	for _, e := range entries {
		want[e.Key] = true
		if err := d.put(e); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Key, err))
		}
	}
	for k, id := range d.ids {
		if !want[k] {
			errs = append(errs, d.remove(k, id))
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) put(e Entry) error {
	id, ok := d.ids[e.Key]
	if !ok {
		id = d.nextID
		if id >= uint32(d.objs.Stats.MaxEntries()) {
			return errors.New("too many Service ports")
		}
		d.nextID++
		d.ids[e.Key] = id
		// A reused id must not carry another port's counters.
		_ = d.clearStats(id)
	}
	if err := d.putRing(id, e); err != nil {
		return err
	}
	if err := d.putBackends(id, e.Backends); err != nil {
		return err
	}
	var flags uint32
	if e.Affinity {
		flags |= bpf.VIPAffinity
	}
	if e.Local {
		flags |= bpf.VIPLocal
	}
	proto := e.Key.Proto
	return d.objs.Vips.Put(bpf.VipKeyFor(e.Key.VIP, e.Key.Port, proto), bpf.LbVipInfo{ServiceId: id, Flags: flags})
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

func (d *Dataplane) putRing(id uint32, e Entry) error {
	if e.Ring == nil {
		if _, ok := d.rings[id]; ok {
			delete(d.rings, id)
			return ignoreNotExist(d.objs.Rings.Delete(id))
		}
		return nil
	}
	h := ringHash(e)
	if old, ok := d.rings[id]; ok && old == h {
		return nil
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
			return err
		}
		idx[i] = n
	}
	ring, err := ebpf.NewMap(d.ring)
	if err != nil {
		return fmt.Errorf("ring: %w", err)
	}
	defer func() { _ = ring.Close() }()
	keys := make([]uint32, len(e.Ring))
	vals := make([]uint32, len(e.Ring))
	for slot, b := range e.Ring {
		keys[slot], vals[slot] = uint32(slot), idx[b]
	}
	if _, err := ring.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("fill ring: %w", err)
	}
	if err := d.objs.Rings.Put(id, ring); err != nil {
		return fmt.Errorf("swap ring: %w", err)
	}
	d.rings[id] = h
	return nil
}

func (d *Dataplane) putBackends(id uint32, bs []Backend) error {
	if len(bs) == 0 {
		if _, ok := d.sets[id]; ok {
			delete(d.sets, id)
			return ignoreNotExist(d.objs.Backends.Delete(id))
		}
		return nil
	}
	h := setHash(bs)
	if old, ok := d.sets[id]; ok && old == h {
		return nil
	}
	var set bpf.LbBackendSet
	for i, b := range bs {
		if i >= len(set.Be) {
			break
		}
		set.Be[i] = bpf.LbBackend{Addr: bpf.Addr(b.Addr), Port: bpf.Port(b.Port), Family: bpf.FamilyOf(b.Addr)}
		set.Count++
	}
	if err := d.objs.Backends.Put(id, set); err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	d.sets[id] = h
	return nil
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
	delete(d.ids, k)
	delete(d.rings, id)
	delete(d.sets, id)
	return err
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
	for table, m := range map[string]*ebpf.Map{"tier1": d.objs.Ct1, "tier2": d.objs.Ct2, "revnat": d.objs.Revnat} {
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
