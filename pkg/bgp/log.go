package bgp

import (
	"github.com/go-logr/logr"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger hands GoBGP's logs to logr: errors and warnings as errors
// and info, the rest at verbosity 1 and 2. Panic and Fatal are logged,
// never acted on: the speaker decides when to exit.
type gobgpLogger struct {
	log   logr.Logger
	level gobgplog.LogLevel
	// onSync runs when GoBGP ends its restarting state ("sync
	// finished"), on GoBGP's own goroutine: it must not block.
	onSync func()
}

func kv(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (l *gobgpLogger) Panic(msg string, f gobgplog.Fields) { l.log.Error(nil, msg, kv(f)...) }
func (l *gobgpLogger) Fatal(msg string, f gobgplog.Fields) { l.log.Error(nil, msg, kv(f)...) }
func (l *gobgpLogger) Error(msg string, f gobgplog.Fields) { l.log.Error(nil, msg, kv(f)...) }
func (l *gobgpLogger) Warn(msg string, f gobgplog.Fields)  { l.log.Info(msg, kv(f)...) }
func (l *gobgpLogger) Info(msg string, f gobgplog.Fields) {
	l.log.V(1).Info(msg, kv(f)...)
	if msg == "sync finished" && l.onSync != nil {
		l.onSync()
	}
}
func (l *gobgpLogger) Debug(msg string, f gobgplog.Fields) { l.log.V(2).Info(msg, kv(f)...) }

func (l *gobgpLogger) SetLevel(level gobgplog.LogLevel) { l.level = level }
func (l *gobgpLogger) GetLevel() gobgplog.LogLevel      { return gobgplog.DebugLevel }
