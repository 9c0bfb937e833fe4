package geodemo

import (
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// ASNDatabaseType is the metadata database_type of a database WriteASN
// produces: the GeoLite2-ASN type, for the reason DatabaseType is the City
// one. The demo marker is in Description.
const ASNDatabaseType = "GeoLite2-ASN"

// AS is an autonomous system of the demo world.
type AS struct {
	Number uint32
	Org    string
}

// cityAS gives the cities whose blocks are not their country's main
// consumer network: data-centre towns, where the attackers' servers are.
var cityAS = map[string]AS{
	"Ashburn":   {14618, "Amazon.com, Inc."},
	"Amsterdam": {14061, "DigitalOcean, LLC"},
	"Frankfurt": {24940, "Hetzner Online GmbH"},
	"Singapore": {16509, "Amazon.com, Inc."},
	"Osaka":     {2516, "KDDI Corporation"},
	"Fukuoka":   {17676, "SoftBank Corp."},
	"Naha":      {17676, "SoftBank Corp."},
}

// countryAS is each country's main consumer network in the demo world.
var countryAS = map[string]AS{
	"JP": {4713, "NTT Communications Corporation"},
	"KR": {4766, "Korea Telecom"},
	"TW": {3462, "Data Communication Business Group"},
	"HK": {4760, "HKT Limited"},
	"CN": {4134, "Chinanet"},
	"SG": {9506, "Singtel Fibre Broadband"},
	"TH": {45758, "Triple T Broadband"},
	"VN": {7552, "Viettel Group"},
	"ID": {7713, "PT Telekomunikasi Indonesia"},
	"PH": {9299, "Philippine Long Distance Telephone Company"},
	"IN": {55836, "Reliance Jio Infocomm Limited"},
	"AU": {1221, "Telstra Corporation Ltd"},
	"DE": {3320, "Deutsche Telekom AG"},
	"NL": {1136, "KPN B.V."},
	"GB": {2856, "British Telecommunications PLC"},
	"FR": {3215, "Orange S.A."},
	"SE": {3301, "Telia Company AB"},
	"PL": {5617, "Orange Polska Spolka Akcyjna"},
	"RU": {12389, "PJSC Rostelecom"},
	"UA": {15895, "Kyivstar PJSC"},
	"US": {7922, "Comcast Cable Communications, LLC"},
	"CA": {812, "Rogers Communications Canada Inc."},
	"BR": {28573, "Claro NXT Telecomunicacoes Ltda"},
	"NG": {29465, "MTN Nigeria Communication limited"},
	"ZA": {37457, "Telkom SA Ltd."},
	"KE": {33771, "Safaricom Limited"},
}

// ASOf returns the network c's blocks belong to in the demo world: a
// data-centre network for the cities attackers rent servers in, the
// country's main consumer network otherwise, and a private-use ASN
// (64512 + a hash of the country) for a country the table does not know.
func ASOf(c City) AS {
	if as, ok := cityAS[c.Name]; ok {
		return as
	}
	if as, ok := countryAS[c.Country]; ok {
		return as
	}
	var h uint32
	for i := 0; i < len(c.Country); i++ {
		h = h*31 + uint32(c.Country[i])
	}
	return AS{Number: 64512 + h%1000, Org: "Demo ISP " + c.Country}
}

// WriteASN writes a MaxMind-format ASN database of cities to path, in the
// GeoLite2-ASN shape (autonomous_system_number,
// autonomous_system_organization), each city's blocks under ASOf(city),
// with the demo marker in its metadata. It checks cities as Write does.
func WriteASN(path string, cities []City) error {
	return writeDB("demo ASN database "+path, path, ASNDatabaseType, nil, cities, func(c City) mmdbtype.Map {
		as := ASOf(c)
		return mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(as.Number),
			"autonomous_system_organization": mmdbtype.String(as.Org),
		}
	})
}
