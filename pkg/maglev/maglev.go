// Package maglev builds weighted Maglev lookup tables (Eisenbud et al.,
// NSDI 2016). It is pure: every node feeds it the same backends and gets a
// byte-identical table, because the input is sorted by key and the hashes
// use fixed seeds. The data plane writes the table into a BPF map and picks
// table[hash(flow) % M].
package maglev

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// DefaultSize is the table size used unless configured: a prime about 100
// times larger than the backends of most Services.
const DefaultSize = 16381

// Sizes are the table sizes allowed: primes, so that every skip value is
// coprime with the size and each permutation visits every slot.
var Sizes = []uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071}

// Backend is one entry the table distributes over.
type Backend struct {
	// Key names the backend the same way on every node (a node name, an
	// endpoint's address and port): it fixes both the order and the
	// backend's permutation.
	Key string
	// ID is what the table holds for this backend.
	ID uint32
	// Weight is the backend's share relative to the others; 0 leaves it out.
	Weight uint32
}

// Fixed seeds: the table must not depend on the process that built it.
const (
	seedOffset uint64 = 0x9e3779b97f4a7c15
	seedSkip   uint64 = 0xc2b2ae3d27d4eb4f
)

// Build returns the table of size m for the backends: m entries, each the
// ID of a backend, each backend holding a share of entries proportional to
// its weight. It fails on a size that is not one of Sizes, on duplicate
// keys, and when no backend has weight.
func Build(backends []Backend, m uint32) ([]uint32, error) {
	return build(backends, m, hash)
}

// build is Build with the hash that places each backend's permutation as
// a parameter, so tests can compare hashes.
func build(backends []Backend, m uint32, hash func(string, uint64) uint64) ([]uint32, error) {
	if !slices.Contains(Sizes, m) {
		return nil, fmt.Errorf("table size %d is not one of %v", m, Sizes)
	}
	bs := make([]Backend, 0, len(backends))
	for _, b := range backends {
		if b.Weight > 0 {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		return nil, errors.New("no backend with a weight")
	}
	slices.SortFunc(bs, func(a, b Backend) int { return cmp.Compare(a.Key, b.Key) })
	for i := 1; i < len(bs); i++ {
		if bs[i].Key == bs[i-1].Key {
			return nil, fmt.Errorf("backend key %q appears twice", bs[i].Key)
		}
	}

	n := len(bs)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]uint64, n)
	var maxWeight uint64
	for i, b := range bs {
		offset[i] = hash(b.Key, seedOffset) % uint64(m)
		skip[i] = hash(b.Key, seedSkip)%uint64(m-1) + 1
		maxWeight = max(maxWeight, uint64(b.Weight))
	}

	table := make([]uint32, m)
	owner := make([]int32, m)
	for i := range owner {
		owner[i] = -1
	}
	filled := uint32(0)
	// Each round every backend earns its weight in credit and places one
	// entry per maxWeight of credit: the heaviest places one per round,
	// the others in proportion.
	for filled < m {
		for i := range bs {
			credit[i] += uint64(bs[i].Weight)
			for credit[i] >= maxWeight && filled < m {
				credit[i] -= maxWeight
				// The backend's next preferred slot that is still free.
				for {
					slot := (offset[i] + next[i]*skip[i]) % uint64(m)
					next[i]++
					if owner[slot] < 0 {
						owner[slot] = int32(i)
						table[slot] = bs[i].ID
						filled++
						break
					}
				}
			}
			if filled == m {
				break
			}
		}
	}
	return table, nil
}

// hash is 64-bit FNV-1a over the key, started from seed and finished with a
// mixer so that keys differing in one byte land far apart.
func hash(key string, seed uint64) uint64 {
	h := seed ^ 0xcbf29ce484222325
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 0x100000001b3
	}
	// splitmix64 finaliser.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Shares counts the entries each ID holds.
func Shares(table []uint32) map[uint32]int {
	out := map[uint32]int{}
	for _, id := range table {
		out[id]++
	}
	return out
}

// Changed returns the fraction of entries that differ between two tables of
// the same size: the share of flows a change would remap.
func Changed(a, b []uint32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 1
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return float64(n) / float64(len(a))
}
