package bpf

// Add adds o's counters to s: the stats map is per CPU, and a Service
// port's counters are the sum over the CPUs.
func (s *LbServiceStats) Add(o LbServiceStats) {
	s.Packets += o.Packets
	s.Bytes += o.Bytes
	s.NewFlows += o.NewFlows
	s.Denied += o.Denied
	s.Unstored += o.Unstored
	s.Limited += o.Limited
	s.CookiesSent += o.CookiesSent
	s.CookiesOk += o.CookiesOk
	s.CookiesBad += o.CookiesBad
}
