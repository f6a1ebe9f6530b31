package metrics

// Family describes one metric family of kmd's own (the Go runtime's and
// the process's standard families, go_* and process_*, come besides).
type Family struct {
	Name   string
	Type   string // gauge, counter or histogram
	Labels []string
	// Sometimes: exported only in some states (see its help).
	Sometimes bool
}

// Families lists kmd's own metric families. A test holds it to what a
// scrape really shows, so the README and the alert rules can be checked
// against it.
func Families() []Family {
	d := []string{labelScope, labelDomain}
	return []Family{
		{Name: "kmd_master_key_age_seconds", Type: "gauge", Labels: d},
		{Name: "kmd_master_key_created_timestamp_seconds", Type: "gauge", Labels: d},
		{Name: "kmd_entries", Type: "gauge", Labels: []string{labelScope, labelDomain, labelKeyID}},
		{Name: "kmd_rekey_state", Type: "gauge", Labels: []string{labelScope, labelDomain, labelState}},
		{Name: "kmd_rekey_in_progress_entries_done", Type: "gauge", Labels: d, Sometimes: true},
		{Name: "kmd_rekey_in_progress_entries_planned", Type: "gauge", Labels: d, Sometimes: true},
		{Name: "kmd_rekey_consecutive_failures", Type: "gauge", Labels: d},
		{Name: "kmd_next_retry_timestamp_seconds", Type: "gauge", Labels: d, Sometimes: true},
		{Name: "kmd_key_rotation_seconds", Type: "gauge", Labels: []string{labelScope}},
		{Name: "kmd_next_rekey_timestamp_seconds", Type: "gauge", Labels: []string{labelScope}, Sometimes: true},
		{Name: "kmd_rekeys_total", Type: "counter", Labels: []string{labelScope, labelDomain, labelResult}},
		{Name: "kmd_rekey_duration_seconds", Type: "histogram", Labels: d},
		{Name: "kmd_entries_reencrypted_total", Type: "counter", Labels: d},
	}
}
