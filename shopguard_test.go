package shopguard_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shopguard/shopguard"
)

func TestActionNames(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range shopguard.Actions() {
		name := a.String()
		require.False(t, seen[name], "duplicate name %q", name)
		seen[name] = true
		require.Equal(t, a, shopguard.ParseAction(name))
	}
	require.Len(t, seen, 15)
	require.Equal(t, shopguard.ActionOther, shopguard.ParseAction("login.sucess"))
	require.Equal(t, shopguard.ActionOther, shopguard.ParseAction(""))
	require.Equal(t, "other", shopguard.Action(200).String())
	require.True(t, shopguard.ActionOrdersExport.IsExport())
	require.False(t, shopguard.ActionLoginSuccess.IsExport())
}

func TestSeverity(t *testing.T) {
	for _, s := range shopguard.Severities() {
		require.True(t, s.Valid())
	}
	require.False(t, shopguard.Severity("urgent").Valid())
	require.False(t, shopguard.Severity("").Valid())
}

func TestFindingJSON(t *testing.T) {
	f := shopguard.Finding{ID: "x", Rule: shopguard.RuleCredentialStuffing, Severity: shopguard.SeverityHigh,
		Time: time.Date(2026, 1, 7, 9, 30, 0, 0, time.UTC), IP: "45.95.147.0/24", Summary: "s",
		Evidence: shopguard.Evidence{Count: 20, Accounts: []shopguard.Account{{ShopID: "a", Actor: "b"}}}}
	b, err := json.Marshal(f)
	require.NoError(t, err)
	// Keyed-by-source findings keep an empty actor and shop (SPEC §2); the
	// evidence leaves out what the rule does not set.
	require.JSONEq(t, `{"id":"x","rule":"credential_stuffing","severity":"high","time":"2026-01-07T09:30:00Z",
		"shop_id":"","actor":"","ip":"45.95.147.0/24","summary":"s",
		"evidence":{"count":20,"accounts":[{"shop_id":"a","actor":"b"}]}}`, string(b))
	var back shopguard.Finding
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, f, back)
}

func TestSensitive(t *testing.T) {
	want := map[shopguard.Action]bool{
		shopguard.ActionPasswordChange: true, shopguard.ActionPasswordReset: true,
		shopguard.ActionMFADisable: true, shopguard.ActionEmailChange: true,
		shopguard.ActionAPIKeyCreate: true, shopguard.ActionPayoutChange: true,
		shopguard.ActionStaffAdd: true, shopguard.ActionAppInstall: true,
	}
	for _, a := range shopguard.Actions() {
		require.Equal(t, want[a], a.Sensitive(), a.String())
	}
}
