package ingest

import (
	"github.com/shopguard/shopguard"
)

// ECS slots.
const (
	ecsTime = iota
	ecsAction
	ecsCategory
	ecsOutcome
	ecsIP
	ecsUser
	ecsOrg
	ecsLabelShop
	ecsUA
	ecsSession
	ecsReason
	ecsRecords
	ecsID
	ecsURL
)

// ecsDecoder reads Elastic Common Schema documents (SPEC §7).
type ecsDecoder struct {
	p    *jsonPaths
	acts actionTable
}

func newECS(acts actionTable) *ecsDecoder {
	return &ecsDecoder{acts: acts, p: newJSONPaths("@timestamp", "event.action", "event.category",
		"event.outcome", "source.ip", "user.name", "organization.id", "labels.shop_id",
		"user_agent.original", "session.id", "event.reason", "labels.records", "event.id", "url.path")}
}

// decode maps one ECS document. event.action goes through the action
// table; a document whose event.category holds "authentication" and whose
// event.outcome is success or failure is a login.success or login.failure
// unless event.action names another known action (a logout, say).
func (e *ecsDecoder) decode(line []byte, ev *shopguard.Event) error {
	var vals [maxSlots]fieldValue
	d := scanner{data: line}
	if err := e.p.scan(&d, &vals); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	j := docView{d: &d, vals: &vals, names: e.p.names}
	var out shopguard.Event
	if err := e.build(j, &out); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	*ev = out
	return nil
}

func (e *ecsDecoder) build(j docView, ev *shopguard.Event) *DecodeError {
	var err *DecodeError
	if ev.Time, err = j.time(ecsTime, timeLayout{}); err != nil {
		return err
	}
	if err := j.fillCommon(ev, -1, ecsUser, ecsIP, ecsUA, ecsSession, ecsReason, ecsURL, ecsID, ecsRecords); err != nil {
		return err
	}
	if ev.ShopID, err = j.str(ecsOrg); err != nil {
		return err
	}
	shopName := "organization.id"
	if ev.ShopID == "" {
		shopName = "labels.shop_id"
		if ev.ShopID, err = j.str(ecsLabelShop); err != nil {
			return err
		}
	}
	act, err := j.str(ecsAction)
	if err != nil {
		return err
	}
	ev.Action = e.acts.lookup(act)
	if ev.Action == shopguard.ActionOther || ev.Action == shopguard.ActionLoginSuccess || ev.Action == shopguard.ActionLoginFailure {
		if j.contains(ecsCategory, "authentication") {
			switch out, _ := j.str(ecsOutcome); out {
			case "success":
				ev.Action = shopguard.ActionLoginSuccess
			case "failure":
				ev.Action = shopguard.ActionLoginFailure
			}
		}
	}
	if ev.Action == shopguard.ActionOther && act == "" && !j.present(ecsCategory) {
		return namedErr(ReasonMissingField, "event.action", "is required")
	}
	return checkEvent(ev, "@timestamp", shopName, "user.name")
}
