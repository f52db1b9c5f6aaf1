package personnummer

import (
	"errors"
	"time"
)

// Errors returned by Parse. None of them carries the input.
var (
	ErrFormat     = errors.New("not a personnummer: expected 10 or 12 digits as YYMMDD-NNNC or YYYYMMDD-NNNC")
	ErrDate       = errors.New("not a personnummer: the date part is not a valid date")
	ErrCheckDigit = errors.New("not a personnummer: the check digit does not match")
)

// Number is a validated personnummer in its 12-digit canonical form (YYYYMMDDNNNC).
// It has no String method on purpose: format it only where it is hashed.
type Number struct {
	digits [12]byte
}

// Canonical returns the 12 digits YYYYMMDDNNNC. Use it only as input to a keyed hash.
func (n Number) Canonical() []byte {
	b := n.digits
	return b[:]
}

// BirthYear is the year of birth encoded in the number.
func (n Number) BirthYear() int {
	return int(n.digits[0]-'0')*1000 + int(n.digits[1]-'0')*100 + int(n.digits[2]-'0')*10 + int(n.digits[3]-'0')
}

// Coordination reports whether the number is a samordningsnummer (day of birth + 60).
func (n Number) Coordination() bool {
	return n.digits[6] >= '6'
}

// Female reports the legal sex encoded in the second-to-last digit (even: female).
func (n Number) Female() bool {
	return (n.digits[10]-'0')%2 == 0
}

// Parse accepts YYYYMMDD-NNNC, YYYYMMDDNNNC, YYMMDD-NNNC, YYMMDD+NNNC (100 years or older) and
// YYMMDDNNNC. A ten-digit number is placed in a century relative to now.
func Parse(s string) (Number, error) {
	return parseAt(s, time.Now())
}

func parseAt(s string, now time.Time) (Number, error) {
	var d []byte
	sep := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			d = append(d, c)
		case (c == '-' || c == '+') && sep == 0 && (len(d) == 6 || len(d) == 8) && len(s)-i-1 == 4:
			sep = c
		default:
			return Number{}, ErrFormat
		}
	}
	var n Number
	switch len(d) {
	case 12:
		if sep == '+' {
			return Number{}, ErrFormat
		}
		copy(n.digits[:], d)
	case 10:
		yy := int(d[0]-'0')*10 + int(d[1]-'0')
		century := now.Year() / 100 * 100
		year := century + yy
		if year > now.Year() {
			year -= 100
		}
		if sep == '+' {
			year -= 100
		}
		n.digits[0] = byte('0' + year/1000)
		n.digits[1] = byte('0' + year/100%10)
		copy(n.digits[2:], d)
	default:
		return Number{}, ErrFormat
	}
	if !validDate(n.digits[:8]) {
		return Number{}, ErrDate
	}
	if CheckDigit(n.digits[2:11]) != n.digits[11]-'0' {
		return Number{}, ErrCheckDigit
	}
	return n, nil
}

func validDate(d []byte) bool {
	num := func(b []byte) int {
		v := 0
		for _, c := range b {
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(d[0:4]), num(d[4:6]), num(d[6:8])
	if day > 60 {
		day -= 60 // samordningsnummer
	}
	if month < 1 || month > 12 || day < 1 {
		return false
	}
	t := time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
	return t.Day() == day && int(t.Month()) == month
}

// CheckDigit computes the Luhn check digit over the nine digits YYMMDDNNN.
func CheckDigit(nine []byte) byte {
	sum := 0
	for i, c := range nine {
		v := int(c - '0')
		if i%2 == 0 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return byte((10 - sum%10) % 10)
}

// Format builds the canonical 12-digit form YYYYMMDDNNNC for a date and a three-digit birth
// number, computing the check digit. It is for synthetic data; serial must be 0–999.
func Format(birth time.Time, serial int, coordination bool) string {
	day := birth.Day()
	if coordination {
		day += 60
	}
	b := []byte{
		byte('0' + birth.Year()/1000), byte('0' + birth.Year()/100%10),
		byte('0' + birth.Year()/10%10), byte('0' + birth.Year()%10),
		byte('0' + int(birth.Month())/10), byte('0' + int(birth.Month())%10),
		byte('0' + day/10), byte('0' + day%10),
		byte('0' + serial/100%10), byte('0' + serial/10%10), byte('0' + serial%10), 0,
	}
	b[11] = '0' + CheckDigit(b[2:11])
	return string(b)
}
