// Package bfd is Bidirectional Forwarding Detection (RFC 5880) for BGP
// sessions (RFC 5881 single hop, RFC 5883 multihop), asynchronous mode
// without echo or authentication: the control packet codec and the
// session state machine, free of sockets and clocks (time is passed in),
// so that they are tested in milliseconds. The socket layer (UDP 3784 and
// 4784, TTL 255) lives with the speaker.
package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// State is a session state (RFC 5880 section 4.1).
type State uint8

// The session states.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Down:
		return "Down"
	case Init:
		return "Init"
	case Up:
		return "Up"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag is why a session last left Up (RFC 5880 section 4.1).
type Diag uint8

// The diagnostics this implementation sets.
const (
	DiagNone             Diag = 0
	DiagDetectionExpired Diag = 1
	DiagNeighborDown     Diag = 3
	DiagAdminDown        Diag = 7
)

func (d Diag) String() string {
	switch d {
	case DiagNone:
		return "None"
	case DiagDetectionExpired:
		return "ControlDetectionTimeExpired"
	case 2:
		return "EchoFunctionFailed"
	case DiagNeighborDown:
		return "NeighborSignaledSessionDown"
	case 4:
		return "ForwardingPlaneReset"
	case 5:
		return "PathDown"
	case 6:
		return "ConcatenatedPathDown"
	case DiagAdminDown:
		return "AdministrativelyDown"
	case 8:
		return "ReverseConcatenatedPathDown"
	}
	return fmt.Sprintf("Diag(%d)", uint8(d))
}

// ErrTTL is a packet that did not arrive with the TTL (hop limit) the
// session requires: 255 for a single-hop session (RFC 5881 section 5,
// GTSM), which no router in between can forge.
var ErrTTL = errors.New("bfd: packet dropped: wrong TTL")

// TTLError is a packet dropped for its TTL: it is ErrTTL, and tells the
// TTL it came with and the least accepted.
type TTLError struct{ TTL, Min int }

func (e *TTLError) Error() string {
	return fmt.Sprintf("bfd: packet dropped: TTL %d, want at least %d", e.TTL, e.Min)
}

// Is makes a TTLError ErrTTL.
func (e *TTLError) Is(target error) bool { return target == ErrTTL }

// Packet is a BFD control packet without an authentication section.
// Intervals are in microseconds, as on the wire.
type Packet struct {
	Diag  Diag
	State State
	// Poll and Final run a poll sequence (a parameter change).
	Poll, Final bool
	// ControlPlaneIndependent: BFD survives the control plane (it does
	// not here: the speaker runs it).
	ControlPlaneIndependent bool
	Demand                  bool
	DetectMult              uint8
	MyDiscriminator         uint32
	YourDiscriminator       uint32
	DesiredMinTx            uint32
	RequiredMinRx           uint32
	RequiredMinEchoRx       uint32
}

// Len is the length of a control packet without authentication.
const Len = 24

// Errors of Parse: each is a reason RFC 5880 section 6.8.6 discards a
// packet for.
var (
	ErrShort         = errors.New("bfd: shorter than a control packet")
	ErrVersion       = errors.New("bfd: not version 1")
	ErrLength        = errors.New("bfd: length field does not match the packet")
	ErrAuth          = errors.New("bfd: authentication is not configured")
	ErrDetectMult    = errors.New("bfd: detect multiplier zero")
	ErrMultipoint    = errors.New("bfd: multipoint bit set")
	ErrMyDiscZero    = errors.New("bfd: my discriminator zero")
	ErrYourDiscZero  = errors.New("bfd: your discriminator zero outside Down and AdminDown")
	ErrDemandNotUsed = errors.New("bfd: demand mode is not supported")
	ErrPollFinal     = errors.New("bfd: poll and final bits both set")
)

const (
	flagPoll   = 0x20
	flagFinal  = 0x10
	flagCPI    = 0x08
	flagAuth   = 0x04
	flagDemand = 0x02
	flagMulti  = 0x01
)

// Parse decodes and validates a control packet as RFC 5880 section 6.8.6
// requires before any state is touched. Bytes past the length field (a
// UDP payload is exactly one packet) are an error too.
func Parse(b []byte) (Packet, error) {
	if len(b) < Len {
		return Packet{}, ErrShort
	}
	if b[0]>>5 != 1 {
		return Packet{}, ErrVersion
	}
	flags := b[1] & 0x3f
	if flags&flagAuth != 0 {
		return Packet{}, ErrAuth
	}
	if int(b[3]) != Len || len(b) != Len {
		return Packet{}, ErrLength
	}
	p := Packet{
		Diag:                    Diag(b[0] & 0x1f),
		State:                   State(b[1] >> 6),
		Poll:                    flags&flagPoll != 0,
		Final:                   flags&flagFinal != 0,
		ControlPlaneIndependent: flags&flagCPI != 0,
		Demand:                  flags&flagDemand != 0,
		DetectMult:              b[2],
		MyDiscriminator:         binary.BigEndian.Uint32(b[4:8]),
		YourDiscriminator:       binary.BigEndian.Uint32(b[8:12]),
		DesiredMinTx:            binary.BigEndian.Uint32(b[12:16]),
		RequiredMinRx:           binary.BigEndian.Uint32(b[16:20]),
		RequiredMinEchoRx:       binary.BigEndian.Uint32(b[20:24]),
	}
	switch {
	case p.DetectMult == 0:
		return Packet{}, ErrDetectMult
	case flags&flagMulti != 0:
		return Packet{}, ErrMultipoint
	case p.MyDiscriminator == 0:
		return Packet{}, ErrMyDiscZero
	case p.YourDiscriminator == 0 && p.State != Down && p.State != AdminDown:
		return Packet{}, ErrYourDiscZero
	case p.Demand && p.State == Up:
		return Packet{}, ErrDemandNotUsed
	case p.Poll && p.Final:
		// RFC 5880 section 6.5 forbids it; BIRD drops such a packet too.
		return Packet{}, ErrPollFinal
	}
	return p, nil
}

// Marshal encodes the packet (version 1, no authentication).
func (p Packet) Marshal() []byte {
	b := make([]byte, Len)
	b[0] = 1<<5 | byte(p.Diag)&0x1f
	flags := byte(p.State&3) << 6
	if p.Poll {
		flags |= flagPoll
	}
	if p.Final {
		flags |= flagFinal
	}
	if p.ControlPlaneIndependent {
		flags |= flagCPI
	}
	if p.Demand {
		flags |= flagDemand
	}
	b[1] = flags
	b[2] = p.DetectMult
	b[3] = Len
	binary.BigEndian.PutUint32(b[4:8], p.MyDiscriminator)
	binary.BigEndian.PutUint32(b[8:12], p.YourDiscriminator)
	binary.BigEndian.PutUint32(b[12:16], p.DesiredMinTx)
	binary.BigEndian.PutUint32(b[16:20], p.RequiredMinRx)
	binary.BigEndian.PutUint32(b[20:24], p.RequiredMinEchoRx)
	return b
}
