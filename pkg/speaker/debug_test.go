package speaker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
)

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:7476": true, "[::1]:7476": true, "localhost:1": true, "0": true,
		":7476": false, "0.0.0.0:7476": false, "10.0.0.1:7476": false, "[::]:7476": false, "nonsense": false} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("%q: %v, want accepted %v", addr, err, ok)
		}
	}
}

// TestDebugOneAtATime: while a dump runs, another caller is turned away
// at once (429) rather than starting a second walk of the tables.
func TestDebugOneAtATime(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	d := &debugServer{log: logr.Discard(), dump: func() (any, bool) {
		close(started)
		<-release
		return map[string]int{"ok": 1}, true
	}}
	first := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, DataplanePath, nil))
		first <- rec.Code
	}()
	<-started
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, DataplanePath, nil))
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("a second dump while one runs: %d, want 429", rec.Code)
	}
	close(release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first dump: %d", code)
	}
	rec = httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("other paths: %d, want 404", rec.Code)
	}
}
