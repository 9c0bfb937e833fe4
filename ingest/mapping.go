package ingest

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shopguard/shopguard"
)

// mapping slots, in MappingConfig order.
const (
	mTime = iota
	mShop
	mActor
	mAction
	mIP
	mUA
	mSession
	mReason
	mRecords
	mResource
	mID
)

// mappingDecoder reads any JSON through configured dotted paths.
type mappingDecoder struct {
	p      *jsonPaths
	layout timeLayout
	acts   actionTable
}

// compileMapping validates c; acts may be nil when only validating.
func compileMapping(c MappingConfig, acts actionTable) (*mappingDecoder, error) {
	var errs []error
	for _, r := range []struct{ key, v string }{{"time", c.Time}, {"shop_id", c.ShopID},
		{"actor", c.Actor}, {"action", c.Action}, {"ip", c.IP}} {
		if r.v == "" {
			errs = append(errs, fmt.Errorf("input.mapping.%s: a path is required", r.key))
		}
	}
	for _, r := range []struct{ key, v string }{{"time", c.Time}, {"shop_id", c.ShopID},
		{"actor", c.Actor}, {"action", c.Action}, {"ip", c.IP}, {"user_agent", c.UserAgent},
		{"session_id", c.SessionID}, {"reason", c.Reason}, {"records", c.Records},
		{"resource", c.Resource}, {"id", c.ID}} {
		if r.v != "" && (strings.HasPrefix(r.v, ".") || strings.HasSuffix(r.v, ".") || strings.Contains(r.v, "..")) {
			errs = append(errs, fmt.Errorf("input.mapping.%s: %q is not a dotted path", r.key, r.v))
		}
	}
	if l := c.TimeLayout; l != "" && l != "rfc3339" && l != "unix" && l != "unix_ms" && !strings.ContainsAny(l, "0123456789") {
		errs = append(errs, fmt.Errorf("input.mapping.time_layout: %q is not rfc3339, unix, unix_ms or a Go layout", l))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &mappingDecoder{acts: acts, layout: parseTimeLayout(c.TimeLayout),
		p: newJSONPaths(c.Time, c.ShopID, c.Actor, c.Action, c.IP, c.UserAgent, c.SessionID,
			c.Reason, c.Records, c.Resource, c.ID)}, nil
}

func (m *mappingDecoder) decode(line []byte, ev *shopguard.Event) error {
	var vals [maxSlots]fieldValue
	d := scanner{data: line}
	if err := m.p.scan(&d, &vals); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	j := docView{d: &d, vals: &vals, names: m.p.names}
	var out shopguard.Event
	if err := m.build(j, &out); err != nil {
		*ev = shopguard.Event{}
		return err
	}
	*ev = out
	return nil
}

func (m *mappingDecoder) build(j docView, ev *shopguard.Event) *DecodeError {
	var err *DecodeError
	if ev.Time, err = j.time(mTime, m.layout); err != nil {
		return err
	}
	opt := func(i int) int {
		if m.p.names[i] == "" {
			return -1
		}
		return i
	}
	if err := j.fillCommon(ev, mShop, mActor, mIP, opt(mUA), opt(mSession), opt(mReason), opt(mResource), opt(mID), opt(mRecords)); err != nil {
		return err
	}
	if !j.present(mAction) {
		return namedErr(ReasonMissingField, m.p.names[mAction], "is required")
	}
	act, err := j.str(mAction)
	if err != nil {
		return err
	}
	ev.Action = m.acts.lookup(act)
	return checkEvent(ev, m.p.names[mTime], m.p.names[mShop], m.p.names[mActor])
}
