package rekey

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrBadRotation is wrapped by every error returned from ParseRotation,
// ParseStagePeriod and (*Rotation).UnmarshalText, so callers can test for it
// with errors.Is.
var ErrBadRotation = errors.New("invalid key rotation")

// Rotation is a rekey period: Never, or N units.
//
// The zero value is Never. Otherwise N is positive and Unit is one of
// 'Y' (calendar years), 'M' (calendar months), 'W' (weeks), 'D' (days),
// 'h' (hours), 'm' (minutes) or 's' (seconds).
type Rotation struct {
	N    int
	Unit byte
}

// Never is the Rotation that never rekeys automatically.
var Never = Rotation{}

// Upper bounds on N per unit. Calendar and day-based units are capped at
// 1000 years; hour, minute and second units are capped at 100 years so that
// the resulting time.Duration (max ~292 years) can never overflow.
const (
	maxYears   = 1000
	maxMonths  = 12 * maxYears
	maxDays    = 365243 // ceil(1000 * 365.2425)
	maxWeeks   = 52177  // floor(maxDays / 7)
	maxHours   = 876582 // 100 * 365.2425 * 24
	maxMinutes = 60 * maxHours
	maxSeconds = 60 * maxMinutes
)

// maxN returns the largest accepted N for unit, and whether unit is valid.
func maxN(unit byte) (int64, bool) {
	switch unit {
	case 'Y':
		return maxYears, true
	case 'M':
		return maxMonths, true
	case 'W':
		return maxWeeks, true
	case 'D':
		return maxDays, true
	case 'h':
		return maxHours, true
	case 'm':
		return maxMinutes, true
	case 's':
		return maxSeconds, true
	}
	return 0, false
}

func unitName(unit byte) string {
	switch unit {
	case 'Y':
		return "years"
	case 'M':
		return "months"
	case 'W':
		return "weeks"
	case 'D':
		return "days"
	case 'h':
		return "hours"
	case 'm':
		return "minutes"
	case 's':
		return "seconds"
	}
	return "units"
}

const (
	wantRotation = "want Never or a positive integer followed by one of Y M W D h m s (e.g. 6W, 2M, 90s)"
	wantStage    = "want a positive integer followed by one of Y M W D h m s (e.g. 6W, 2M, 90s)"
)

// parseError is a single-line error that wraps ErrBadRotation.
type parseError struct {
	what  string // "key rotation" or "stage period"
	input string
	msg   string // what is wrong and what would be right
}

func (e *parseError) Error() string {
	return "invalid " + e.what + " " + strconv.Quote(e.input) + ": " + e.msg
}

func (e *parseError) Unwrap() error { return ErrBadRotation }

// ParseRotation parses a --key-rotation value: exactly "Never", or a positive
// decimal integer without sign or leading zeros followed by exactly one unit
// letter among Y M W D h m s (e.g. "6W", "2M", "1Y", "90s").
func ParseRotation(s string) (Rotation, error) {
	if s == "Never" {
		return Never, nil
	}
	return parse(s, "key rotation", wantRotation)
}

// ParseStagePeriod parses a --stage-period value. It uses the same syntax as
// ParseRotation except that "Never" is not accepted.
func ParseStagePeriod(s string) (Rotation, error) {
	if s == "Never" {
		return Never, &parseError{"stage period", s, "Never is not allowed here; " + wantStage}
	}
	return parse(s, "stage period", wantStage)
}

func parse(s, what, want string) (Rotation, error) {
	fail := func(format string, args ...any) (Rotation, error) {
		return Never, &parseError{what, s, fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return fail("empty value; %s", want)
	}
	unit := s[len(s)-1]
	digits := s[:len(s)-1]
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			return fail("whitespace is not allowed; %s", want)
		}
	}
	if s[0] == '+' || s[0] == '-' {
		return fail("a sign is not allowed; %s", want)
	}
	limit, ok := maxN(unit)
	if !ok {
		if fixed, ok := caseFix(unit); ok && isPlainNumber(digits) {
			return fail("units are case-sensitive (did you mean %s%c?); %s", digits, fixed, want)
		}
		return fail("%s", want)
	}
	if digits == "" {
		return fail("missing number before unit %c; %s", unit, want)
	}
	for i := 0; i < len(digits); i++ {
		if c := digits[i]; c < '0' || c > '9' {
			return fail("%s", want)
		}
	}
	if digits[0] == '0' {
		if allZero(digits) {
			return fail("the number must be positive; %s", want)
		}
		return fail("leading zeros are not allowed (write %s%c); %s", trimZeros(digits), unit, want)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > limit {
		return fail("%s is too large for unit %c (at most %d %s); %s", digits, unit, limit, unitName(unit), want)
	}
	if int64(int(n)) != n { // only possible on 32-bit platforms
		return fail("%s is too large for unit %c on this platform; %s", digits, unit, want)
	}
	return Rotation{N: int(n), Unit: unit}, nil
}

// caseFix maps a unit letter typed in the wrong case to the valid unit, when
// that is unambiguous ('M' and 'm' are both valid and mean different things).
func caseFix(unit byte) (byte, bool) {
	switch unit {
	case 'y':
		return 'Y', true
	case 'w':
		return 'W', true
	case 'd':
		return 'D', true
	case 'H':
		return 'h', true
	case 'S':
		return 's', true
	}
	return 0, false
}

// isPlainNumber reports whether s is a positive ASCII decimal number without
// leading zeros.
func isPlainNumber(s string) bool {
	if s == "" || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

func trimZeros(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}

// IsNever reports whether r is Never (the zero value).
func (r Rotation) IsNever() bool { return r == Never }

// valid reports whether r is Never or a Rotation ParseRotation could return.
func (r Rotation) valid() bool {
	if r.IsNever() {
		return true
	}
	limit, ok := maxN(r.Unit)
	return ok && r.N > 0 && int64(r.N) <= limit
}

// String returns "Never" or N followed by the unit, e.g. "6W". For every
// Rotation returned by ParseRotation, ParseRotation(r.String()) returns r.
// A Rotation that ParseRotation could not have produced is rendered as
// "%!Rotation(N=…, Unit=…)", which does not parse.
func (r Rotation) String() string {
	if r.IsNever() {
		return "Never"
	}
	if !r.valid() {
		return fmt.Sprintf("%%!Rotation(N=%d, Unit=%q)", r.N, r.Unit)
	}
	return strconv.Itoa(r.N) + string(r.Unit)
}

// After returns t + r. Years and months are calendar years and months and are
// added with t.AddDate, so they follow its normalisation (e.g. Jan 31 + 1M is
// Mar 3 in a non-leap year, and Feb 29 + 1Y is Mar 1). Weeks (7 days) and days
// are also added with AddDate, i.e. in calendar days in t's location. Hours,
// minutes and seconds are added as an exact time.Duration with t.Add.
// For Never (or a Rotation ParseRotation could not have produced) After
// returns the zero time.Time.
func (r Rotation) After(t time.Time) time.Time {
	if r.IsNever() || !r.valid() {
		return time.Time{}
	}
	n := r.N
	switch r.Unit {
	case 'Y':
		return t.AddDate(n, 0, 0)
	case 'M':
		return t.AddDate(0, n, 0)
	case 'W':
		return t.AddDate(0, 0, 7*n)
	case 'D':
		return t.AddDate(0, 0, n)
	case 'h':
		return t.Add(time.Duration(n) * time.Hour)
	case 'm':
		return t.Add(time.Duration(n) * time.Minute)
	case 's':
		return t.Add(time.Duration(n) * time.Second)
	}
	return time.Time{}
}

// MarshalText implements encoding.TextMarshaler; it returns r.String().
// It fails for a Rotation that ParseRotation could not have produced.
func (r Rotation) MarshalText() ([]byte, error) {
	if !r.valid() {
		return nil, fmt.Errorf("%w: cannot marshal %s", ErrBadRotation, r.String())
	}
	return []byte(r.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseRotation.
// On error r is left unchanged.
func (r *Rotation) UnmarshalText(b []byte) error {
	v, err := ParseRotation(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}
