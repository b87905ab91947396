//go:build !linux

package bgp

import "errors"

// listenerMD5: dynamic peers need Linux's TCP MD5 on listeners.
func listenerMD5() error { return errors.New("dynamic peers need Linux") }
