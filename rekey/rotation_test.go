package rekey

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseRotationValid(t *testing.T) {
	tests := []struct {
		in   string
		want Rotation
	}{
		{"Never", Never},
		{"1Y", Rotation{1, 'Y'}},
		{"2M", Rotation{2, 'M'}},
		{"6W", Rotation{6, 'W'}},
		{"30D", Rotation{30, 'D'}},
		{"12h", Rotation{12, 'h'}},
		{"45m", Rotation{45, 'm'}},
		{"90s", Rotation{90, 's'}},
		{"10W", Rotation{10, 'W'}},
		{"100D", Rotation{100, 'D'}},
		// Upper bounds are inclusive.
		{"1000Y", Rotation{1000, 'Y'}},
		{"12000M", Rotation{12000, 'M'}},
		{"52177W", Rotation{52177, 'W'}},
		{"365243D", Rotation{365243, 'D'}},
		{"876582h", Rotation{876582, 'h'}},
		{"52594920m", Rotation{52594920, 'm'}},
		{"3155695200s", Rotation{3155695200, 's'}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRotation(tt.in)
			if err != nil {
				t.Fatalf("ParseRotation(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseRotation(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
			if got.IsNever() != (tt.in == "Never") {
				t.Errorf("IsNever() = %v", got.IsNever())
			}
		})
	}
}

func TestParseRotationInvalid(t *testing.T) {
	tests := []struct {
		in       string
		contains string // substring expected in the error message
	}{
		// Examples from the SPEC.
		{"6X", "want Never or a positive integer"},
		{"0W", "must be positive"},
		{"-1D", "sign"},
		{"W", "missing number"},
		{"6", "want Never"},
		{"6w", "case-sensitive (did you mean 6W?)"},
		{"", "empty"},
		// Only the exact spelling "Never".
		{"never", "want Never"},
		{"NEVER", "want Never"},
		{"Never ", "whitespace"},
		// Leading zeros, signs, whitespace.
		{"06W", "leading zeros are not allowed (write 6W)"},
		{"007s", "leading zeros are not allowed (write 7s)"},
		{"00D", "must be positive"},
		{"+6W", "sign"},
		{"+0W", "sign"},
		{" 6W", "whitespace"},
		{"6W ", "whitespace"},
		{"6 W", "whitespace"},
		{"6W\n", "whitespace"},
		{"\t6W", "whitespace"},
		// Unicode digits and other non-ASCII.
		{"٦W", "want Never"}, // ARABIC-INDIC DIGIT SIX
		{"６W", "want Never"}, // FULLWIDTH DIGIT SIX
		{"6Ｗ", "want Never"}, // FULLWIDTH W
		{"6µs", "want Never"},
		// Multiple units, fractions, other junk.
		{"6WD", "want Never"},
		{"1Y2M", "want Never"},
		{"1.5D", "want Never"},
		{"1e3s", "want Never"},
		{"0x10s", "want Never"},
		{"1_000s", "want Never"},
		{"6ms", "want Never"},
		{"6H", "did you mean 6h?"},
		{"6S", "did you mean 6s?"},
		{"6d", "did you mean 6D?"},
		{"6y", "did you mean 6Y?"},
		{"Ns", "want Never"},
		{"s", "missing number"},
		// Bounds.
		{"1001Y", "too large for unit Y (at most 1000 years)"},
		{"12001M", "too large for unit M (at most 12000 months)"},
		{"52178W", "too large for unit W (at most 52177 weeks)"},
		{"365244D", "too large for unit D (at most 365243 days)"},
		{"876583h", "too large for unit h (at most 876582 hours)"},
		{"52594921m", "too large for unit m (at most 52594920 minutes)"},
		{"3155695201s", "too large for unit s (at most 3155695200 seconds)"},
		// Overflows int64.
		{"9223372036854775807s", "too large"},
		{"9223372036854775808s", "too large"},
		{"99999999999999999999999999999Y", "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRotation(tt.in)
			if err == nil {
				t.Fatalf("ParseRotation(%q) = %#v, want error", tt.in, got)
			}
			checkParseError(t, err, "invalid key rotation "+strconv.Quote(tt.in)+": ")
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", err, tt.contains)
			}
			if got != Never {
				t.Errorf("on error got %#v, want zero value", got)
			}
		})
	}
}

func checkParseError(t *testing.T, err error, prefix string) {
	t.Helper()
	if !errors.Is(err, ErrBadRotation) {
		t.Errorf("error %q does not wrap ErrBadRotation", err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error is not a single line: %q", msg)
	}
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	if !strings.Contains(msg, "positive integer followed by one of Y M W D h m s (e.g. 6W, 2M, 90s)") {
		t.Errorf("error %q does not say what would be right", msg)
	}
}

func TestParseRotationErrorExactMessage(t *testing.T) {
	_, err := ParseRotation("6X")
	want := `invalid key rotation "6X": want Never or a positive integer followed by one of Y M W D h m s (e.g. 6W, 2M, 90s)`
	if err == nil || err.Error() != want {
		t.Fatalf("ParseRotation(\"6X\") error = %v, want %s", err, want)
	}
}

func TestRotationParseStagePeriod(t *testing.T) {
	for _, in := range []string{"1Y", "2M", "6W", "30D", "12h", "45m", "90s"} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseStagePeriod(in)
			if err != nil {
				t.Fatalf("ParseStagePeriod(%q) error: %v", in, err)
			}
			want, _ := ParseRotation(in)
			if got != want {
				t.Fatalf("ParseStagePeriod(%q) = %#v, want %#v", in, got, want)
			}
		})
	}
	for _, in := range []string{"Never", "never", "", "6X", "0W", "-1D", "W", "6", "6w", "06W", "+6W", " 6W", "1001Y"} {
		t.Run("bad/"+in, func(t *testing.T) {
			got, err := ParseStagePeriod(in)
			if err == nil {
				t.Fatalf("ParseStagePeriod(%q) = %#v, want error", in, got)
			}
			msg := err.Error()
			if !errors.Is(err, ErrBadRotation) {
				t.Errorf("error %q does not wrap ErrBadRotation", msg)
			}
			if !strings.HasPrefix(msg, "invalid stage period "+strconv.Quote(in)+": ") {
				t.Errorf("error %q should say invalid stage period", msg)
			}
			if strings.Contains(msg, "want Never") {
				t.Errorf("error %q should not suggest Never", msg)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error is not a single line: %q", msg)
			}
		})
	}
	_, err := ParseStagePeriod("Never")
	if err == nil || !strings.Contains(err.Error(), "Never is not allowed") {
		t.Errorf("ParseStagePeriod(Never) error = %v, want it to say Never is not allowed", err)
	}
}

func TestRotationStringRoundTrip(t *testing.T) {
	rs := []Rotation{Never}
	for _, u := range []byte("YMWDhms") {
		limit, _ := maxN(u)
		for _, n := range []int{1, 2, 9, 10, 99, 100, int(limit) - 1, int(limit)} {
			rs = append(rs, Rotation{n, u})
		}
	}
	for _, r := range rs {
		s := r.String()
		got, err := ParseRotation(s)
		if err != nil {
			t.Errorf("ParseRotation(%q) (from %#v) error: %v", s, r, err)
			continue
		}
		if got != r {
			t.Errorf("ParseRotation(%q) = %#v, want %#v", s, got, r)
		}
	}
}

func TestRotationStringInvalidValue(t *testing.T) {
	for _, r := range []Rotation{{0, 'W'}, {-1, 'D'}, {6, 'X'}, {1001, 'Y'}, {5, 0}} {
		s := r.String()
		if _, err := ParseRotation(s); err == nil {
			t.Errorf("String() of invalid %#v = %q parses", r, s)
		}
		if r.IsNever() {
			t.Errorf("%#v.IsNever() = true", r)
		}
		if got := r.After(time.Now()); !got.IsZero() {
			t.Errorf("%#v.After() = %v, want zero time", r, got)
		}
		if _, err := r.MarshalText(); !errors.Is(err, ErrBadRotation) {
			t.Errorf("%#v.MarshalText() error = %v, want ErrBadRotation", r, err)
		}
	}
}

func TestRotationZeroValueIsNever(t *testing.T) {
	var r Rotation
	if !r.IsNever() || r != Never || r.String() != "Never" {
		t.Fatalf("zero Rotation = %#v (%q), want Never", r, r.String())
	}
	if got := Never.After(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)); !got.IsZero() {
		t.Errorf("Never.After() = %v, want zero time", got)
	}
}

func TestRotationAfter(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s int) time.Time {
		return time.Date(y, mo, d, h, mi, s, 0, time.UTC)
	}
	base := utc(2024, 3, 15, 10, 30, 0)
	tests := []struct {
		name string
		r    string
		from time.Time
		want time.Time
	}{
		{"years", "2Y", base, utc(2026, 3, 15, 10, 30, 0)},
		{"months", "2M", base, utc(2024, 5, 15, 10, 30, 0)},
		{"months across year", "10M", base, utc(2025, 1, 15, 10, 30, 0)},
		{"weeks", "6W", base, utc(2024, 4, 26, 10, 30, 0)},
		{"days", "30D", base, utc(2024, 4, 14, 10, 30, 0)},
		{"hours", "36h", base, utc(2024, 3, 16, 22, 30, 0)},
		{"minutes", "90m", base, utc(2024, 3, 15, 12, 0, 0)},
		{"seconds", "90s", base, utc(2024, 3, 15, 10, 31, 30)},

		// Calendar months follow time.Time.AddDate semantics: the day of
		// month is kept and then normalised, so Jan 31 + 1M is "Feb 31",
		// which normalises to Mar 2 in a leap year and Mar 3 otherwise.
		// It is NOT clamped to the end of February.
		{"Jan 31 + 1M leap year", "1M", utc(2024, 1, 31, 0, 0, 0), utc(2024, 3, 2, 0, 0, 0)},
		{"Jan 31 + 1M common year", "1M", utc(2023, 1, 31, 0, 0, 0), utc(2023, 3, 3, 0, 0, 0)},
		{"Mar 31 + 1M", "1M", utc(2023, 3, 31, 0, 0, 0), utc(2023, 5, 1, 0, 0, 0)},
		{"Jan 31 + 2M", "2M", utc(2023, 1, 31, 0, 0, 0), utc(2023, 3, 31, 0, 0, 0)},
		{"Dec 31 + 1M", "1M", utc(2023, 12, 31, 0, 0, 0), utc(2024, 1, 31, 0, 0, 0)},

		// Leap years: Feb 29 + 1Y is "Feb 29" of a common year, which
		// normalises to Mar 1; + 4Y lands on Feb 29 again.
		{"Feb 29 + 1Y", "1Y", utc(2024, 2, 29, 12, 0, 0), utc(2025, 3, 1, 12, 0, 0)},
		{"Feb 29 + 4Y", "4Y", utc(2024, 2, 29, 12, 0, 0), utc(2028, 2, 29, 12, 0, 0)},
		{"Feb 29 + 12M", "12M", utc(2024, 2, 29, 0, 0, 0), utc(2025, 3, 1, 0, 0, 0)},
		{"Feb 28 + 1D leap", "1D", utc(2024, 2, 28, 0, 0, 0), utc(2024, 2, 29, 0, 0, 0)},
		{"Feb 28 + 1D common", "1D", utc(2023, 2, 28, 0, 0, 0), utc(2023, 3, 1, 0, 0, 0)},
		{"1Y over leap day is 366 days", "1Y", utc(2024, 1, 1, 0, 0, 0), utc(2025, 1, 1, 0, 0, 0)},
		{"2100 is not a leap year", "1Y", utc(2096, 2, 29, 0, 0, 0), utc(2097, 3, 1, 0, 0, 0)},

		// Bounds stay representable.
		{"1000Y", "1000Y", base, utc(3024, 3, 15, 10, 30, 0)},
		{"max seconds", "3155695200s", base, base.Add(3155695200 * time.Second)},
		{"max hours", "876582h", base, base.Add(876582 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRotation(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			got := r.After(tt.from)
			if !got.Equal(tt.want) {
				t.Errorf("%s.After(%v) = %v, want %v", tt.r, tt.from, got, tt.want)
			}
			if !got.After(tt.from) {
				t.Errorf("%s.After(%v) = %v is not later", tt.r, tt.from, got)
			}
		})
	}
}

// Days and weeks are calendar days (AddDate) in t's location, so across a DST
// change they keep the wall clock time, while hours are exact durations.
func TestRotationAfterDST(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	from := time.Date(2024, 3, 30, 12, 0, 0, 0, loc) // DST starts 2024-03-31
	day := Rotation{1, 'D'}.After(from)
	if want := time.Date(2024, 3, 31, 12, 0, 0, 0, loc); !day.Equal(want) {
		t.Errorf("1D.After = %v, want %v", day, want)
	}
	if got := day.Sub(from); got != 23*time.Hour {
		t.Errorf("1D across DST = %v, want 23h", got)
	}
	week := Rotation{1, 'W'}.After(from)
	if want := time.Date(2024, 4, 6, 12, 0, 0, 0, loc); !week.Equal(want) {
		t.Errorf("1W.After = %v, want %v", week, want)
	}
	if got := (Rotation{24, 'h'}).After(from).Sub(from); got != 24*time.Hour {
		t.Errorf("24h across DST = %v, want 24h", got)
	}
}

func TestRotationMarshalText(t *testing.T) {
	for _, s := range []string{"Never", "1Y", "2M", "6W", "30D", "12h", "45m", "90s"} {
		t.Run(s, func(t *testing.T) {
			var r Rotation
			if err := r.UnmarshalText([]byte(s)); err != nil {
				t.Fatalf("UnmarshalText(%q): %v", s, err)
			}
			b, err := r.MarshalText()
			if err != nil {
				t.Fatalf("MarshalText: %v", err)
			}
			if string(b) != s {
				t.Errorf("MarshalText = %q, want %q", b, s)
			}
		})
	}

	// UnmarshalText rejects what ParseRotation rejects and leaves r alone.
	r := Rotation{6, 'W'}
	for _, s := range []string{"never", "6X", "", "06W"} {
		err := r.UnmarshalText([]byte(s))
		if !errors.Is(err, ErrBadRotation) {
			t.Errorf("UnmarshalText(%q) error = %v, want ErrBadRotation", s, err)
		}
		if r != (Rotation{6, 'W'}) {
			t.Errorf("UnmarshalText(%q) modified r to %#v", s, r)
		}
	}

	// Works through encoding/json as a map value and struct field.
	type cfg struct {
		Rotation Rotation `json:"rotation"`
		Stage    Rotation `json:"stage"`
	}
	in := cfg{Rotation: Rotation{2, 'M'}, Stage: Never}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"rotation":"2M","stage":"Never"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var out cfg
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("json round trip = %#v, want %#v", out, in)
	}
	if err := json.Unmarshal([]byte(`{"rotation":"6X"}`), &out); !errors.Is(err, ErrBadRotation) {
		t.Errorf("json.Unmarshal bad value error = %v, want ErrBadRotation", err)
	}
}

func FuzzParseRotation(f *testing.F) {
	for _, s := range []string{
		"Never", "never", "NEVER", "", "6W", "2M", "1Y", "90s", "30D", "12h", "45m",
		"6X", "0W", "-1D", "W", "6", "6w", "06W", "+6W", " 6W", "6W\n", "٦W",
		"1000Y", "1001Y", "3155695200s", "3155695201s", "9223372036854775808s",
	} {
		f.Add(s)
	}
	fixed := time.Date(2024, 1, 31, 23, 59, 59, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRotation(s)
		if err != nil {
			if !errors.Is(err, ErrBadRotation) {
				t.Fatalf("ParseRotation(%q) error %q does not wrap ErrBadRotation", s, err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("ParseRotation(%q) error is not one line: %q", s, msg)
			}
			if r != Never {
				t.Fatalf("ParseRotation(%q) returned %#v with an error", s, r)
			}
		} else {
			if s != r.String() {
				t.Fatalf("ParseRotation(%q) = %#v, String() = %q", s, r, r.String())
			}
			again, err := ParseRotation(r.String())
			if err != nil || again != r {
				t.Fatalf("round trip of %q: got %#v, %v", s, again, err)
			}
			if r.IsNever() {
				if s != "Never" {
					t.Fatalf("ParseRotation(%q) = Never", s)
				}
				if !r.After(fixed).IsZero() {
					t.Fatalf("Never.After is not zero")
				}
			} else {
				if r.N <= 0 {
					t.Fatalf("ParseRotation(%q).N = %d", s, r.N)
				}
				if got := r.After(fixed); !got.After(fixed) {
					t.Fatalf("%q.After(%v) = %v, not later", s, fixed, got)
				}
			}
		}

		// ParseStagePeriod agrees with ParseRotation except for Never.
		sp, serr := ParseStagePeriod(s)
		if serr != nil {
			if !errors.Is(serr, ErrBadRotation) || strings.ContainsAny(serr.Error(), "\n\r") {
				t.Fatalf("ParseStagePeriod(%q) bad error %q", s, serr)
			}
		}
		if s == "Never" {
			if serr == nil {
				t.Fatalf("ParseStagePeriod accepted Never")
			}
		} else if (serr == nil) != (err == nil) || sp != r {
			t.Fatalf("ParseStagePeriod(%q) = %#v, %v; ParseRotation = %#v, %v", s, sp, serr, r, err)
		}
	})
}
