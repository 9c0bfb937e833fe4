package detect

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
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

// TestIndexAsMap: random puts and deletes, on keys crowded into a few home
// slots as well as spread, leave the index holding what a map holds.
func TestIndexAsMap(t *testing.T) {
	for _, keys := range []uint64{16, 5000, 1 << 40} {
		var x index
		defer x.reset()
		want := map[uint64]ref{}
		rng := rand.New(rand.NewPCG(2, keys))
		for i := range 100_000 {
			h := rng.Uint64N(keys)
			if keys == 1<<40 {
				h <<= 24 // the same low bits, unlike accountHash's
			}
			switch rng.IntN(3) {
			case 0:
				x.del(h)
				delete(want, h)
			default:
				v := ref(1 + rng.Uint32N(1<<32-2))
				x.put(h, v)
				want[h] = v
			}
			require.Equal(t, want[h], x.get(h), "op %d key %#x", i, h)
			require.Equal(t, len(want), x.len())
		}
		got := map[uint64]ref{}
		x.each(func(h uint64, v ref) { got[h] = v })
		require.Equal(t, want, got)
		for h, v := range want {
			require.Equal(t, v, x.get(h), "key %#x", h)
		}
		require.Zero(t, x.get(1<<63+12345), "a key never put")
	}
}

// TestArenaChunkHalfFree: a chunk is worth emptying once half its bytes
// are in free slots, not a slot before; the chunk being carved never is.
func TestArenaChunkHalfFree(t *testing.T) {
	var a arena
	defer a.reset()
	n := int(slotSizes[7]) // 128-byte slots
	var refs []ref
	for a.size <= arenaChunk {
		r, _ := a.alloc(n - 1)
		refs = append(refs, r)
	}
	require.Equal(t, 2, len(a.chunks))
	perChunk := arenaChunk / n
	first := refs[:perChunk]
	for i, r := range first[:perChunk/2-1] {
		require.False(t, a.release(r), "slot %d", i)
	}
	require.True(t, a.release(first[perChunk/2-1]), "half the chunk free")
	a.release(refs[perChunk])
	require.False(t, a.sparse[1], "a chunk being carved")

	// The sealed chunk's free slots are not handed out again.
	a.seal()
	for range perChunk / 2 {
		r, _ := a.alloc(n - 1)
		require.NotEqual(t, 0, r.chunk())
	}
	size := a.size
	a.drop()
	require.Equal(t, size-arenaChunk, a.size)
	require.Nil(t, a.chunks[0])
	r, _ := a.alloc(n - 1)
	require.Equal(t, 1, r.chunk(), "freed slots of chunk 1 first")
}

// TestArenaSparseTogether: in an arena of more than 32 chunks, sparse
// chunks are emptied together once they hold a 32nd of it, not one by one.
func TestArenaSparseTogether(t *testing.T) {
	var a arena
	defer a.reset()
	n := int(slotSizes[len(slotSizes)-1]) // the largest class
	var refs [][]ref
	for len(a.chunks) < 41 {
		r, _ := a.alloc(n - 1)
		if c := r.chunk(); c == len(refs) {
			refs = append(refs, nil)
		}
		refs[r.chunk()] = append(refs[r.chunk()], r)
	}
	// 41 chunks: a 32nd is more than one chunk, so two sparse ones are
	// needed.
	require.Greater(t, a.size/32, arenaChunk)
	half := func(c int) (last bool) {
		rs := refs[c]
		for i := 0; a.free[c] < arenaChunk/2; i++ {
			last = a.release(rs[i])
		}
		return last
	}
	require.False(t, half(0), "one sparse chunk of 41")
	require.True(t, a.sparse[0])
	require.True(t, half(1), "two sparse chunks of 41")
	a.seal()
	a.drop()
	require.Nil(t, a.chunks[0])
	require.Nil(t, a.chunks[1])
	require.Zero(t, a.nSparse)
	require.Equal(t, 39*arenaChunk, a.size)
}

// TestAccountsGrowOutOfSlots: every account growing out of its slot at
// once (each one's second login) empties the chunks left mostly free, so
// that mapped memory stays near the records' own, and every account still
// reads back as written.
func TestAccountsGrowOutOfSlots(t *testing.T) {
	const n = 300_000
	s := newAccountStore(int64(24*3600e9), 10*n, nil)
	defer s.release()
	s.hotCap = 16
	name := func(h uint64) string { return "staff-" + strconv.FormatUint(h, 10) }
	grow := []int{1, 4, 0} // sessions added per round
	for round, k := range grow {
		for h := range uint64(n) {
			a := s.get(h)
			if round == 0 {
				require.Nil(t, a)
				a = s.create(h)
				a.shop, a.actor = "shop", name(h)
			}
			require.Equal(t, name(h), a.actor)
			require.Len(t, a.sessions, sum(grow[:round]), "account %d", h)
			for i := range a.sessions {
				require.Equal(t, h<<8|uint64(i), a.sessions[i].h, "account %d", h)
			}
			for range k {
				a.sessions = append(a.sessions, session{h: h<<8 | uint64(len(a.sessions)), client: uint32(h)})
			}
		}
		var live int
		for _, g := range []*acctGen{s.cur, s.prev} {
			g.idx.each(func(_ uint64, r ref) {
				if r != inHot {
					live += len(g.mem.record(r)) + 1
				}
			})
		}
		mapped := s.cur.mem.size + s.prev.mem.size
		t.Logf("round %d: %d bytes in records, %d mapped", round, live, mapped)
		require.Less(t, mapped, live+live/8+2*arenaChunk, "round %d: mapped memory stays near the records'", round)
	}
}

func sum(s []int) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}

// TestAccountsPromotedEmptyPrevious: accounts moving to the current
// generation one by one give the previous generation's chunks back as they
// empty, and every account, moved or not yet, reads back as written.
func TestAccountsPromotedEmptyPrevious(t *testing.T) {
	const n = 200_000
	const base = int64(1_767_000_000e9) // event times are unix ns
	s := newAccountStore(1000, 10*n, nil)
	defer s.release()
	s.hotCap = 16
	s.advance(base)
	for h := range uint64(n) {
		a := s.create(h)
		a.shop, a.actor = "shop", strconv.FormatUint(h, 10)
		a.sessions = append(a.sessions, session{h: h})
	}
	s.get(n + 1) // nothing: the last accounts leave the hot set on the next gets
	s.advance(base + 1000)
	require.Equal(t, n, s.prev.idx.len())
	full := s.prev.mem.size
	for h := range uint64(n) {
		a := s.get(h)
		require.NotNil(t, a, "account %d", h)
		require.Equal(t, strconv.FormatUint(h, 10), a.actor)
		require.Equal(t, []session{{h: h}}, a.sessions)
		if h == n/2 {
			require.Less(t, s.prev.mem.size, full*3/4, "half moved: the emptied chunks are given back")
		}
	}
	require.LessOrEqual(t, s.prev.mem.size, 2*arenaChunk)
	require.Zero(t, s.prev.idx.len())
}

// TestArenaMoveKeepsCapacity: a record moved (as an emptied chunk's are)
// keeps its slot's capacity, for a big slot too, however often it moves.
func TestArenaMoveKeepsCapacity(t *testing.T) {
	var a arena
	defer a.reset()
	for _, n := range []int{15, int(slotSizes[len(slotSizes)-1]) - 1, int(slotSizes[len(slotSizes)-1]), 100_000} {
		r, p := a.alloc(n)
		for i := range p {
			p[i] = byte(i)
		}
		want := slices.Clone(a.record(r))
		require.GreaterOrEqual(t, len(want), n)
		for range 5 {
			r = a.move(r)
		}
		require.Equal(t, want, a.record(r), "a record of %d bytes", n)
	}
}
