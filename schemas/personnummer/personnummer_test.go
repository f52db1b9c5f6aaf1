package personnummer

import (
	"strings"
	"testing"
	"time"
)

func TestParseAcceptsTheUsualForms(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	valid := Format(time.Date(1985, 7, 14, 0, 0, 0, 0, time.UTC), 238, false)
	short := valid[2:8] + "-" + valid[8:]
	for _, in := range []string{valid, valid[:8] + "-" + valid[8:], short, valid[2:]} {
		n, err := parseAt(in, now)
		if err != nil {
			t.Fatalf("form %d chars: %v", len(in), err)
		}
		if string(n.Canonical()) != valid || n.BirthYear() != 1985 {
			t.Fatalf("form %d chars: canonical mismatch", len(in))
		}
	}
	old := Format(time.Date(1920, 3, 1, 0, 0, 0, 0, time.UTC), 11, false)
	n, err := parseAt(old[2:8]+"+"+old[8:], now)
	if err != nil || n.BirthYear() != 1920 {
		t.Fatalf("plus form: year %d err %v", n.BirthYear(), err)
	}
}

func TestParseRejectsWithoutEchoingTheNumber(t *testing.T) {
	valid := Format(time.Date(1990, 2, 28, 0, 0, 0, 0, time.UTC), 123, false)
	wrongCheck := valid[:11] + string('0'+(valid[11]-'0'+1)%10)
	cases := map[string]error{
		wrongCheck:          ErrCheckDigit,
		"19900230" + "1234": ErrDate,
		"1990-02-28":        ErrFormat,
		"abc":               ErrFormat,
		"":                  ErrFormat,
		valid + "1":         ErrFormat,
	}
	for in, want := range cases {
		_, err := Parse(in)
		if err != want {
			t.Errorf("Parse(len %d) = %v, want %v", len(in), err, want)
		}
		if err != nil && in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("error echoes the input")
		}
	}
}

func TestCoordinationNumberAndSex(t *testing.T) {
	s := Format(time.Date(2001, 12, 31, 0, 0, 0, 0, time.UTC), 442, true)
	n, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Coordination() || !n.Female() {
		t.Fatalf("coordination=%v female=%v", n.Coordination(), n.Female())
	}
}

func FuzzParseNeverEchoes(f *testing.F) {
	f.Add("19850714-2380")
	f.Add("850714+2380")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err == nil {
			if CheckDigit(n.Canonical()[2:11]) != n.Canonical()[11]-'0' {
				t.Fatal("accepted a number with a wrong check digit")
			}
			return
		}
		if len(s) >= 4 && strings.Contains(err.Error(), s) {
			t.Fatal("error echoes input")
		}
	})
}
