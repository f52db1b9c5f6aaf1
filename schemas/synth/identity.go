package synth

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/samsyn/samsyn/schemas/personnummer"
)

// ErrCapacity is returned when an association needs more synthetic personnummer for one
// birth year and gender than the allocation scheme holds.
var ErrCapacity = errors.New("no synthetic personnummer left")

// Synthetic personnummer are allocated, not drawn, so that they are unique across the whole
// federation without any shared state:
//
//   - the 100 two-digit serial groups 01–99 are split into disjoint ranges, one per
//     association (12 groups each for eight associations); the third serial digit is even for
//     women and odd for men, so each association has groups×5 serials per day and gender;
//   - within an association, the n-th participant of a (birth year, gender) gets day
//     (n·211 + offset) mod daysInYear — a permutation of the days, since 211 is prime and
//     divides neither 365 nor 366 — and, once every day is used, the next serial;
//   - after every serial of the range, the same slots are used once more as samordningsnummer
//     (day + 60).
//
// With eight associations that is 2·60·365 = 43,800 numbers per association, birth year and
// gender, roughly forty times what 1,000,000 participants per association need.
type allocator struct {
	assoc  string
	index  int // the association's position in the association code list
	groups int // serial groups per association
	next   map[allocKey]int
}

type allocKey struct {
	year   int
	female bool
}

const dayStride = 211

func newAllocator(assoc string, index, associations int) (*allocator, error) {
	groups := 99 / associations
	if groups == 0 {
		return nil, fmt.Errorf("allocate personnummer: %d associations do not fit the 99 serial groups", associations)
	}
	return &allocator{assoc: assoc, index: index, groups: groups, next: map[allocKey]int{}}, nil
}

// perGender is the number of serials per day and gender in the association's range.
func (a *allocator) perGender() int { return a.groups * 5 }

// capacity is the number of personnummer per birth year and gender.
func (a *allocator) capacity(year int) int { return 2 * a.perGender() * daysInYear(year) }

func daysInYear(year int) int {
	return time.Date(year, 12, 31, 0, 0, 0, 0, time.UTC).YearDay()
}

// personnummer returns the next unused number for a participant born in year of the gender.
func (a *allocator) personnummer(year int, female bool) (string, error) {
	k := allocKey{year, female}
	n := a.next[k]
	if n >= a.capacity(year) {
		g := "men"
		if female {
			g = "women"
		}
		return "", fmt.Errorf("allocate a personnummer in %s for %s born %d: all %d are in use: %w", a.assoc, g, year, a.capacity(year), ErrCapacity)
	}
	a.next[k] = n + 1
	return a.slot(year, female, n), nil
}

// slot maps the n-th allocation of a (year, gender) to its number.
func (a *allocator) slot(year int, female bool, n int) string {
	days := daysInYear(year)
	cycle := n / days
	coordination := cycle >= a.perGender()
	s := cycle % a.perGender()
	// The offset spreads the first births of each (association, year, gender) over the year.
	offset := int(mix(uint64(a.index)<<32|uint64(year)<<1|b2u(female)) % uint64(days))
	day := ((n%days)*dayStride + offset) % days
	parity := 1
	if female {
		parity = 0
	}
	group := 1 + a.index*a.groups + s%a.groups
	serial := group*10 + (s/a.groups)*2 + parity
	birth := time.Date(year, 1, 1+day, 0, 0, 0, 0, time.UTC)
	return personnummer.Format(birth, serial, coordination)
}

// anonymousID is the local id of a participant registered without consent. The association
// in it makes it unique across the federation.
func anonymousID(assoc string, i int) string {
	return "anon-" + assoc + "-" + strconv.Itoa(i+1)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
