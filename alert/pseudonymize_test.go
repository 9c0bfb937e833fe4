package alert

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

// recordingSink keeps what it is sent.
type recordingSink struct {
	got []shopguard.Finding
	err error
}

func (r *recordingSink) Send(_ context.Context, fs ...shopguard.Finding) error {
	if r.err != nil {
		return r.err
	}
	r.got = append(r.got, fs...)
	return nil
}

const testKey = "0123456789abcdef-pseudonym-key"

func TestPseudonymDeterministicAndKeyed(t *testing.T) {
	p, err := NewPseudonymizer(&recordingSink{}, []byte(testKey))
	require.NoError(t, err)
	other, err := NewPseudonymizer(&recordingSink{}, []byte("another-key-of-enough-length"))
	require.NoError(t, err)

	got := p.Pseudonym("shop-17", "owner@example.jp")
	require.Regexp(t, regexp.MustCompile(`^hmac:[0-9a-f]{16}$`), got)
	// The documented construction, computed independently.
	mac := hmac.New(sha256.New, []byte(testKey))
	mac.Write([]byte("shop-17\x00owner@example.jp"))
	require.Equal(t, "hmac:"+hex.EncodeToString(mac.Sum(nil))[:16], got)

	require.Equal(t, got, p.Pseudonym("shop-17", "owner@example.jp"), "deterministic")
	require.NotEqual(t, got, other.Pseudonym("shop-17", "owner@example.jp"), "keyed")
	require.NotEqual(t, got, p.Pseudonym("shop-18", "owner@example.jp"), "an actor is per shop")
	require.Empty(t, p.Pseudonym("shop-17", ""))

	_, err = NewPseudonymizer(&recordingSink{}, []byte("short"))
	require.ErrorContains(t, err, "at least 16")
}

func TestPseudonymizerRewritesFindings(t *testing.T) {
	next := &recordingSink{}
	p, err := NewPseudonymizer(next, []byte(testKey))
	require.NoError(t, err)

	travel := travelFinding("t")
	travel.Summary = "owner@example.jp logged in from Frankfurt, DE; owner@example.jp.evil is another account"
	stuff := stuffingFinding("s")
	in := []shopguard.Finding{travel, stuff}
	require.NoError(t, p.Send(t.Context(), in...))

	require.Equal(t, []shopguard.Finding{travelFinding("t"), stuffingFinding("s")}[1], in[1], "the caller's findings are not modified")
	require.Equal(t, "owner@example.jp", in[0].Actor)
	require.Equal(t, "alice@shop3.example", in[1].Evidence.Accounts[0].Actor)

	require.Len(t, next.got, 2)
	gt, gs := next.got[0], next.got[1]
	pt := p.Pseudonym("shop-17", "owner@example.jp")
	require.Equal(t, pt, gt.Actor)
	require.Equal(t, pt+" logged in from Frankfurt, DE; "+pt+".evil is another account", gt.Summary)
	require.Equal(t, travel.ID, gt.ID, "ids stay, receivers de-duplicate on them")
	require.Equal(t, travel.Evidence, gt.Evidence)

	require.Empty(t, gs.Actor)
	require.Equal(t, []shopguard.Account{
		{ShopID: "shop-3", Actor: p.Pseudonym("shop-3", "alice@shop3.example")},
		{ShopID: "shop-9", Actor: p.Pseudonym("shop-9", "bob")},
	}, gs.Evidence.Accounts)
	require.NotContains(t, gs.Summary, "alice@shop3.example")
	require.True(t, strings.HasSuffix(gs.Summary, "e.g. "+p.Pseudonym("shop-3", "alice@shop3.example")))
}
