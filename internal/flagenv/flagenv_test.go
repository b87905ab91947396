package flagenv

import (
	"flag"
	"testing"
)

func TestApply(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	name := fs.String("node-name", "", "")
	leader := fs.Bool("leader-elect", true, "")
	addr := fs.String("metrics-addr", ":1", "")
	t.Setenv("IRONLB_NODE_NAME", "from-env")
	t.Setenv("IRONLB_LEADER_ELECT", "false")
	t.Setenv("IRONLB_METRICS_ADDR", ":2")
	if err := fs.Parse([]string{"--metrics-addr=:3"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, "IRONLB_"); err != nil {
		t.Fatal(err)
	}
	if *name != "from-env" || *leader || *addr != ":3" {
		t.Fatalf("got node-name %q leader-elect %v metrics-addr %q; want from-env, false, :3 (the command line wins)", *name, *leader, *addr)
	}
	t.Setenv("IRONLB_LEADER_ELECT", "maybe")
	fs2 := flag.NewFlagSet("y", flag.ContinueOnError)
	fs2.Bool("leader-elect", true, "")
	_ = fs2.Parse(nil)
	if err := Apply(fs2, "IRONLB_"); err == nil {
		t.Fatal("a malformed value was accepted")
	}
}
