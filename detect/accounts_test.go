package detect

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMain lets TestColdAccounts run the whole package with a hot set of
// DETECT_HOT_ACCOUNTS accounts.
func TestMain(m *testing.M) {
	if v := os.Getenv("DETECT_HOT_ACCOUNTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			panic("DETECT_HOT_ACCOUNTS: " + v)
		}
		hotAccounts = n
	}
	os.Exit(m.Run())
}

// TestColdAccounts runs every test of the package again with a hot set of
// one account, so that every account but the current event's is a record
// between events: the rules, golden files and snapshots must not notice.
func TestColdAccounts(t *testing.T) {
	if os.Getenv("DETECT_HOT_ACCOUNTS") != "" {
		t.Skip("already the cold run")
	}
	if testing.Short() {
		t.Skip("runs the package again")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^Test", "-test.skip", "^TestColdAccounts$")
	cmd.Env = append(os.Environ(), "DETECT_HOT_ACCOUNTS=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "with a hot set of one account:\n%s", out)
}

// TestAccountRecord: an account with every part of its state set comes back
// from its record equal.
func TestAccountRecord(t *testing.T) {
	s := newAccountStore(int64(3600e9), 100, nil)
	var n names
	a := account{h: 42, shop: "shop-1", actor: "オーナー@example.jp", nLogins: 2, firedTravel: -5, lastFinding: 1 << 62}
	a.logins[0] = login{t: 1_700_000_000_000_000_000, ip: netip.MustParseAddr("126.0.0.1"),
		at: spot{lat: 35.6, lon: 139.7, city: n.id("Tokyo"), country: uint16(n.id("Japan")), radiusKM: 20}}
	a.logins[1] = login{t: 1_700_000_000_000_000_007, ip: netip.MustParseAddr("2001:db8::1%eth0"),
		at: spot{lat: -33.9, lon: 151.2, radiusKM: 1000}}
	a.prof = profile{ents: []pentry{{h: 7, last: 300, kind: propCountry}, {h: 9, last: 301, kind: propClient, flags: entTainted, days: 2}}, logins: 9, days: 3, lastDay: 301}
	a.sessions = []session{
		{h: 1, t: 1_700_000_000_000_000_001, last: netip.MustParseAddr("126.0.0.1").As16(), lastUA: 3, country: 4, network: 5, client: 6, fired: true},
		{h: 2, t: 1_699_000_000_000_000_000, last: netip.MustParseAddr("2001:db8::2").As16(), lastUA: 1 << 31, country: 1 << 31, network: 1<<32 - 1, client: 1 << 20},
	}
	a.x = &extra{fails: window{s: []stamp{{t: 1, n: 1, addr: netip.MustParseAddr("45.95.147.1")}}}, exports: window{s: []stamp{{t: 2, n: 5000}}},
		firedBrute: 1, firedTakeover: 2, firedExport: 3, firedCritical: 4, compromised: 5, compromisedID: "f-1", compromisedRule: "account_takeover",
		risky: risky{t: 6, ip: netip.MustParseAddr("45.95.147.9"), session: 7, id: "f-2", rule: "impossible_travel"}, firedRisky: [8]int64{1, 2, 3, 4, 5, 6, 7, 8}}

	for _, acct := range []account{a, {h: 1, shop: "s", actor: ""}} {
		b := s.appendRecord(nil, &acct)
		var got account
		d := decoder{b: b}
		s.decodeRecord(&d, &got)
		require.NoError(t, d.err)
		require.Empty(t, d.b, "the record is read to its end")
		got.h = acct.h
		if acct.sessions != nil {
			require.Equal(t, acct.sessions, got.sessions)
			got.sessions = acct.sessions // capacities may differ
		}
		require.Equal(t, acct, got)
	}
}

// TestAccountStoreAsTable: random use of a store with a small hot set
// holds exactly the keys a table holds, and evicts as many, for every
// reason; state written to an account survives its trips to a record.
func TestAccountStoreAsTable(t *testing.T) {
	const gen = int64(1000)
	for _, hot := range []int{1, 2, 7, 1000} {
		evicted := map[string]int{}
		tEvicted := map[string]int{}
		s := newAccountStore(gen, 50, func(r string, n int) { evicted[r] += n })
		s.hotCap = hot
		tb := newTable[uint64, account](gen, 50, func(r string, n int) { tEvicted[r] += n })
		rng := rand.New(rand.NewPCG(1, uint64(hot)))
		now := int64(1)
		for i := range 20000 {
			now += rng.Int64N(60)
			s.advance(now)
			tb.advance(now)
			h := rng.Uint64N(120)
			want := tb.get(h)
			got := s.get(h)
			require.Equal(t, want == nil, got == nil, "op %d key %d", i, h)
			if want == nil {
				want = &account{h: h, shop: "s", actor: strconv.FormatUint(h, 10)}
				tb.put(h, want)
				got = s.create(h)
				got.shop, got.actor = want.shop, want.actor
			}
			require.Equal(t, *want, *got, "op %d key %d", i, h)
			want.lastFinding, got.lastFinding = now, now
			want.prof.logins++
			got.prof.logins++
			require.Equal(t, tb.len(), s.len())
			require.LessOrEqual(t, len(s.hot), hot)
		}
		require.Equal(t, tEvicted, evicted, "hot set %d", hot)
		require.Positive(t, evicted["cap"])
		require.Positive(t, evicted["expired"])
	}
}
