package bfd

import "encoding/binary"

// nativeEndian reads control message integers, which the kernel writes
// in the host's byte order.
var nativeEndian = binary.NativeEndian
