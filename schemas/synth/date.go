package synth

import (
	"strconv"
	"sync"
	"time"
)

// Date is a calendar day counted from 1970-01-01, the same count Arrow's date32 uses.
type Date int32

// DateOf returns the Date of the calendar day y-m-d.
func DateOf(y int, m time.Month, d int) Date {
	return Date(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// Time returns midnight UTC of the day.
func (d Date) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// Month returns the calendar month that holds the day.
func (d Date) Month() Month {
	t := d.Time()
	return Month(t.Year()*12 + int(t.Month()) - 1)
}

// String formats the day as YYYY-MM-DD.
func (d Date) String() string {
	if d >= PeriodStart && d <= PeriodEnd {
		return periodDays()[d-PeriodStart]
	}
	return d.Time().Format(time.DateOnly)
}

// Month is a calendar month counted as year*12 + month - 1.
type Month int32

// Year is the month's year.
func (m Month) Year() int { return int(m) / 12 }

// First returns the first day of the month.
func (m Month) First() Date { return DateOf(m.Year(), time.Month(int(m)%12+1), 1) }

// String formats the month as YYYY-MM.
func (m Month) String() string {
	if first := PeriodStart.Month(); m >= first && m <= PeriodEnd.Month() {
		return periodMonths()[m-first]
	}
	return formatMonth(m)
}

func formatMonth(m Month) string {
	mm := int(m)%12 + 1
	s := strconv.Itoa(m.Year()) + "-"
	if mm < 10 {
		s += "0"
	}
	return s + strconv.Itoa(mm)
}

// The strings of every day and month in the study period are formatted once: the writers
// print millions of them.
var (
	periodDays = sync.OnceValue(func() []string {
		out := make([]string, 0, int(PeriodEnd-PeriodStart)+1)
		for d := PeriodStart; d <= PeriodEnd; d++ {
			out = append(out, d.Time().Format(time.DateOnly))
		}
		return out
	})
	periodMonths = sync.OnceValue(func() []string {
		var out []string
		for m := PeriodStart.Month(); m <= PeriodEnd.Month(); m++ {
			out = append(out, formatMonth(m))
		}
		return out
	})
)
