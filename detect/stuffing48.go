package detect

import "net/netip"

// stuffingLevels returns the source keys of ip for credential_stuffing,
// narrowest first, without duplicates: the address, its block (IPv4 /24,
// IPv6 /64), and for IPv6 the wider block (the /48), which catches a
// campaign rotating across the /64s of one allocation (SPEC §3.2). The
// /48 counts against the same threshold as the /64.
// It fills and returns a slice of buf, so the hot path does not allocate.
func (e *Engine) stuffingLevels(buf *[3]netip.Prefix, ip netip.Addr) []netip.Prefix {
	out := append(buf[:0], netip.PrefixFrom(ip, ip.BitLen()))
	if b := e.blockOf(ip); b.Bits() != ip.BitLen() {
		out = append(out, b)
	}
	if w := e.cfg.CredentialStuffing.IPv6WidePrefix; ip.Is6() && w > 0 && w < out[len(out)-1].Bits() {
		p, _ := ip.Prefix(w)
		out = append(out, p)
	}
	return out
}

// validateCampaign checks the campaign settings of credential_stuffing.
func (s StuffingConfig) validateCampaign(bad func(key, format string, args ...any)) {
	if w := s.IPv6WidePrefix; w != 0 && (w < 16 || w > 128) {
		bad("credential_stuffing.ipv6_wide_prefix", "must be 0 (off) or between 16 and 128, got %d", w)
	}
	if n := s.ASNThreshold; n < 0 || n > 10000 {
		bad("credential_stuffing.asn_threshold", "must be 0 (off) or between 1 and 10000, got %d", n)
	}
	if n := s.ASNHostingThreshold; n < 0 || n > 10000 {
		bad("credential_stuffing.asn_hosting_threshold", "must be 0 (off) or between 1 and 10000, got %d", n)
	}
}
