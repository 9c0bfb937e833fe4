package ingest

import (
	"github.com/shopguard/shopguard"
)

// OCSF slots.
const (
	ocsfClass = iota
	ocsfActivity
	ocsfStatus
	ocsfTime
	ocsfUser
	ocsfIP
	ocsfUA
	ocsfSession
	ocsfOrg
	ocsfTenant
	ocsfReason
	ocsfID
	ocsfActivityName
	ocsfRecords
)

// OCSF classes and activities read (OCSF 1.x).
const (
	ocsfAuthentication = "3002"
	ocsfAccountChange  = "3001"
)

// ocsfDecoder reads OCSF 1.x Authentication and Account Change events.
type ocsfDecoder struct {
	p    *jsonPaths
	acts actionTable
}

func newOCSF(acts actionTable) *ocsfDecoder {
	return &ocsfDecoder{acts: acts, p: newJSONPaths("class_uid", "activity_id", "status_id", "time",
		"user.name", "src_endpoint.ip", "http_request.user_agent", "session.uid", "user.org.uid",
		"metadata.tenant_uid", "status_detail", "metadata.uid", "activity_name", "unmapped.records")}
}

// decode maps one OCSF event. Authentication (3002): activity 1 logon with
// status 1 success / 2 failure, activity 2 logoff. Account Change (3001):
// activity 3 password change, 4 password reset, 10 MFA enable, 11 MFA
// disable. Any other class or activity goes through the action table by
// activity_name (so an API Activity named customers_export can be mapped).
func (o *ocsfDecoder) decode(line []byte, ev *shopguard.Event) error {
	var vals [maxSlots]fieldValue
	d := scanner{data: line}
	if err := o.p.scan(&d, &vals); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	j := docView{d: &d, vals: &vals, names: o.p.names}
	var out shopguard.Event
	if err := o.build(j, &out); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	*ev = out
	return nil
}

func (o *ocsfDecoder) build(j docView, ev *shopguard.Event) *DecodeError {
	var err *DecodeError
	if !j.present(ocsfClass) {
		return namedErr(ReasonMissingField, "class_uid", "is required")
	}
	if ev.Time, err = j.time(ocsfTime, timeLayout{kind: 2}); err != nil {
		return err
	}
	if err := j.fillCommon(ev, ocsfOrg, ocsfUser, ocsfIP, ocsfUA, ocsfSession, ocsfReason, -1, ocsfID, ocsfRecords); err != nil {
		return err
	}
	shopName := "user.org.uid"
	if ev.ShopID == "" {
		shopName = "metadata.tenant_uid"
		if ev.ShopID, err = j.str(ocsfTenant); err != nil {
			return err
		}
	}
	class, act, status := bstr(j.text(ocsfClass)), bstr(j.text(ocsfActivity)), bstr(j.text(ocsfStatus))
	ev.Action = shopguard.ActionOther
	switch {
	case class == ocsfAuthentication && act == "1" && status == "1":
		ev.Action = shopguard.ActionLoginSuccess
	case class == ocsfAuthentication && act == "1" && status == "2":
		ev.Action = shopguard.ActionLoginFailure
	case class == ocsfAuthentication && act == "2":
		ev.Action = shopguard.ActionLogout
	case class == ocsfAccountChange && act == "3":
		ev.Action = shopguard.ActionPasswordChange
	case class == ocsfAccountChange && act == "4":
		ev.Action = shopguard.ActionPasswordReset
	case class == ocsfAccountChange && act == "10":
		ev.Action = shopguard.ActionMFAEnable
	case class == ocsfAccountChange && act == "11":
		ev.Action = shopguard.ActionMFADisable
	default:
		name, err := j.str(ocsfActivityName)
		if err != nil {
			return err
		}
		ev.Action = o.acts.lookup(name)
	}
	return checkEvent(ev, "time", shopName, "user.name")
}
