package synth

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Options say what to generate.
type Options struct {
	// Participants is the federation total, split over the associations by their share
	// (Stockholm largest). Zero means DefaultParticipants unless PerAssociation is set.
	Participants int
	// PerAssociation, when positive, gives every association this many participants
	// instead (for benchmarks). Set at most one of Participants and PerAssociation.
	PerAssociation int
	// Seed selects the data: the same seed and options give byte-identical files.
	Seed uint64
	// Format is "csv" (the default) or "parquet".
	Format string
	// Associations limits the output to these association ids; empty means all. An
	// association's data does not depend on which others are generated.
	Associations []string
	// Overwrite lets Write replace the files in association folders that already exist.
	Overwrite bool
	// Progress, if set, is called now and then with the participants done out of total for
	// an association. Write calls it from several goroutines at once.
	Progress func(assoc string, done, total int)
}

// Formats are the file formats Write can produce.
var Formats = []string{"csv", "parquet"}

// NullBool is a boolean that may be empty.
type NullBool struct {
	Bool  bool
	Valid bool
}

// Participant is one synthetic participant with everything recorded about them.
type Participant struct {
	// Exactly one of Personnummer (consent given) and AnonymousID (no consent) is set.
	Personnummer string
	AnonymousID  string

	Association          string
	Municipality         string
	CityDistrict         string // only for Stockholm (0180); empty elsewhere
	Gender               string
	BirthYear            int
	BornAbroad           NullBool
	Education            string
	ReferralParty        string
	IncomeBefore         string
	YearsOnPublicSupport string
	Consent              bool

	Episodes  []Episode  // in start order; at least one
	Followups []Followup // one per month in an episode, in month order
	Survey    []Answer
}

// Episode is one intervention episode. An episode still running at the end of the period
// has Ended false and every exit field empty.
type Episode struct {
	Method      string
	Start       Date
	Ended       bool
	Exit        Date   // meaningful only when Ended
	ExitReason  string // empty while ongoing
	Outcome     string // empty while ongoing
	ExtentPct   int    // 25–100 for exits to work or studies; 0 means empty
	IncomeAfter string // empty while ongoing
}

// Followup is one monthly follow-up.
type Followup struct {
	Month        Month
	GoalProgress int // 1–5
}

// Answer is one answered survey question.
type Answer struct {
	Instrument string
	Question   string
	Answer     string
}

// Age is the participant's age at the start of the first episode, counted as the catalog
// queries count it: the start year minus the birth year.
func (p *Participant) Age() int { return p.Episodes[0].Start.Time().Year() - p.BirthYear }

// Counts returns the number of participants each selected association gets, in the order of
// the association code list.
func Counts(opts Options) ([]AssociationCount, error) {
	m, err := loadModel()
	if err != nil {
		return nil, err
	}
	if err := opts.check(m); err != nil {
		return nil, err
	}
	return opts.counts(m), nil
}

// AssociationCount is an association's number of participants.
type AssociationCount struct {
	Association  string
	Participants int
}

func (o *Options) check(m *model) error {
	switch {
	case o.Participants < 0:
		return fmt.Errorf("participants must not be negative, got %d", o.Participants)
	case o.PerAssociation < 0:
		return fmt.Errorf("participants per association must not be negative, got %d", o.PerAssociation)
	case o.Participants > 0 && o.PerAssociation > 0:
		return errors.New("give either a federation total of participants or a number per association, not both")
	}
	if o.Format != "" && !slices.Contains(Formats, o.Format) {
		return fmt.Errorf("unknown format %q: expected %s", o.Format, strings.Join(Formats, " or "))
	}
	seen := map[string]bool{}
	for _, a := range o.Associations {
		if _, ok := m.assoc[a]; !ok {
			return fmt.Errorf("unknown association %q: expected one of %s", a, strings.Join(m.associations, ", "))
		}
		if seen[a] {
			return fmt.Errorf("association %q is named twice", a)
		}
		seen[a] = true
	}
	return nil
}

// counts splits the federation total by largest remainder over every association, so an
// association's count does not depend on which associations are selected.
func (o *Options) counts(m *model) []AssociationCount {
	all := make([]AssociationCount, len(m.associations))
	if o.PerAssociation > 0 {
		for i, a := range m.associations {
			all[i] = AssociationCount{a, o.PerAssociation}
		}
	} else {
		total := o.Participants
		if total == 0 {
			total = DefaultParticipants
		}
		type rem struct {
			i int
			r float64
		}
		rems := make([]rem, len(m.associations))
		given := 0
		for i, a := range m.associations {
			exact := float64(total) * m.assoc[a].share
			n := int(math.Floor(exact))
			all[i] = AssociationCount{a, n}
			given += n
			rems[i] = rem{i, exact - float64(n)}
		}
		slices.SortStableFunc(rems, func(x, y rem) int {
			switch {
			case x.r > y.r:
				return -1
			case x.r < y.r:
				return 1
			}
			return 0
		})
		for k := 0; given < total; k++ {
			all[rems[k%len(rems)].i].Participants++
			given++
		}
	}
	if len(o.Associations) == 0 {
		return all
	}
	var out []AssociationCount
	for _, c := range all {
		if slices.Contains(o.Associations, c.Association) {
			out = append(out, c)
		}
	}
	return out
}

// Generate streams the participants of one association to emit, in the order Write writes
// them. emit may keep the Participant: nothing in it is reused.
func Generate(ctx context.Context, opts Options, assoc string, emit func(Participant) error) error {
	m, err := loadModel()
	if err != nil {
		return err
	}
	if err := opts.check(m); err != nil {
		return err
	}
	n := -1
	for _, c := range opts.counts(m) {
		if c.Association == assoc {
			n = c.Participants
		}
	}
	if n < 0 {
		if _, ok := m.assoc[assoc]; !ok {
			return fmt.Errorf("unknown association %q: expected one of %s", assoc, strings.Join(m.associations, ", "))
		}
		return fmt.Errorf("association %s is not among the selected associations", assoc)
	}
	return generate(ctx, m, opts, assoc, n, emit)
}

const progressEvery = 1024

func generate(ctx context.Context, m *model, opts Options, assoc string, n int, emit func(Participant) error) error {
	g, err := newGenerator(m, opts.Seed, assoc)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if i%progressEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if opts.Progress != nil && i > 0 {
				opts.Progress(assoc, i, n)
			}
		}
		p, err := g.participant(i)
		if err != nil {
			return err
		}
		if err := emit(p); err != nil {
			return err
		}
	}
	if opts.Progress != nil {
		opts.Progress(assoc, n, n)
	}
	return nil
}

// generator makes the participants of one association in order. Each participant's values
// come from its own PCG stream, seeded by (seed, association, index); only the personnummer
// allocation carries state from one participant to the next.
type generator struct {
	m     *model
	a     *assocModel
	seed  [2]uint64
	src   *rand.PCG
	r     *rand.Rand
	alloc *allocator
}

func newGenerator(m *model, seed uint64, assoc string) (*generator, error) {
	a, ok := m.assoc[assoc]
	if !ok {
		return nil, fmt.Errorf("unknown association %q: expected one of %s", assoc, strings.Join(m.associations, ", "))
	}
	alloc, err := newAllocator(assoc, a.index, len(m.associations))
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte(assoc))
	src := rand.NewPCG(0, 0)
	return &generator{
		m: m, a: a, src: src, r: rand.New(src), alloc: alloc,
		seed: [2]uint64{mix(seed), mix(h.Sum64() ^ mix(seed+1))},
	}, nil
}

func (g *generator) participant(i int) (Participant, error) {
	g.src.Seed(g.seed[0]^mix(uint64(i)), g.seed[1]+uint64(i))
	r, m, a, prof := g.r, g.m, g.a, &g.a.profile

	p := Participant{Association: a.id}
	female := r.Float64() < prof.women
	p.Gender = genderMan
	if female {
		p.Gender = genderWoman
	}
	band := a.ageRange[a.ageBand.pick(r)]
	age := band[0] + r.IntN(band[1]-band[0]+1)
	start := PeriodStart + Date(r.IntN(int(PeriodEnd-PeriodStart)+1))
	p.BirthYear = start.Time().Year() - age

	p.Municipality = a.municipality.pick(r)
	if p.Municipality == stockholmCode {
		p.CityDistrict = m.cityDistrict.pick(r)
	}
	if r.Float64() >= bornAbroadNullRate {
		p.BornAbroad = NullBool{Bool: r.Float64() < prof.bornAbroad, Valid: true}
	}
	p.Education = m.education.pick(r)
	p.ReferralParty = a.referral[p.Gender].pick(r)
	if r.Float64() < prof.socialAssistance {
		p.IncomeBefore = incomeSocial
	} else {
		p.IncomeBefore = pickBy(m.incomeBefore, p.ReferralParty).pick(r)
	}
	if r.Float64() < prof.longSupport {
		p.YearsOnPublicSupport = supportLong
	} else {
		p.YearsOnPublicSupport = pickBy(m.supportYears, p.IncomeBefore).pick(r)
	}
	p.Consent = r.Float64() >= anonymousRate

	// Episodes: the first starts anywhere in the period; a second may follow an ended one.
	first := g.episode(start, age, p.IncomeBefore)
	p.Episodes = []Episode{first}
	if first.Ended && r.Float64() < secondEpisodeRate {
		next := first.Exit + 1 + Date(r.IntN(120))
		if next <= PeriodEnd {
			p.Episodes = append(p.Episodes, g.episode(next, age, p.IncomeBefore))
		}
	}
	p.Followups = g.followups(p.Episodes)
	p.Survey = g.survey(p.Episodes)

	// Identity last, so that the draws above do not depend on it.
	if p.Consent {
		pnr, err := g.alloc.personnummer(p.BirthYear, female)
		if err != nil {
			return Participant{}, err
		}
		p.Personnummer = pnr
	} else {
		p.AnonymousID = anonymousID(a.id, i)
	}
	return p, nil
}

func pickBy(by map[string]picker, key string) picker {
	if p, ok := by[key]; ok {
		return p
	}
	return by[""]
}

const daysPerMonth = 30.44

func (g *generator) episode(start Date, age int, incomeBefore string) Episode {
	r, m, prof := g.r, g.m, &g.a.profile
	e := Episode{Method: g.a.method.pick(r), Start: start}
	reason := m.exitReason.pick(r)

	mean := defaultMethodMonths
	if v, ok := m.methodMonths[e.Method]; ok {
		mean = v
	}
	// A gamma(3) length around the method's mean; those who drop out or move leave early,
	// a misregistration is corrected within a month.
	months := -mean / 3 * math.Log(r.Float64()*r.Float64()*r.Float64()+1e-12)
	switch {
	case reason == exitCompleted:
	case reason == exitMisregistered:
		months = r.Float64()
	default:
		months *= 0.2 + 0.6*r.Float64()
	}
	exit := start + Date(math.Round(months*daysPerMonth))
	if exit > PeriodEnd {
		return e
	}
	e.Ended, e.Exit, e.ExitReason = true, exit, reason

	rates := reasonOutcome[reason]
	ws, ord := rates.workStudies, rates.ordinary
	if reason == exitCompleted {
		v, ok := m.methodWS[e.Method]
		if !ok {
			v = defaultMethodWorkStudies
		}
		ws = v * prof.workFactor
		ord *= prof.ordinaryFactor
	}
	x := r.Float64()
	afterKey := ""
	switch {
	case x < ws:
		e.Outcome = outcomeWork
		studies := 0.08
		switch {
		case age < 25:
			studies = 0.45
		case age < 35:
			studies = 0.22
		}
		if r.Float64() < studies {
			e.Outcome = outcomeStudies
		}
		pct, _ := strconv.Atoi(m.extent.pick(r))
		e.ExtentPct = pct
		afterKey = e.Outcome
		if e.Outcome == outcomeWork && pct == 100 {
			afterKey = "work_full"
		}
	case x < ws+ord:
		e.Outcome = m.ordinary[r.IntN(len(m.ordinary))]
		afterKey = e.Outcome
	default:
		e.Outcome = outcomeOther
		if r.Float64() < rates.seeking {
			e.Outcome = outcomeSeeking
		}
		afterKey = e.Outcome
	}
	e.IncomeAfter = pickBy(m.incomeAfter, afterKey).pick(r)
	if e.IncomeAfter == "before" {
		e.IncomeAfter = incomeBefore
	}
	return e
}

// followups gives one row per month in which the participant is in an episode. Progress
// toward the goal starts low and tends to rise; it rises more slowly for those who drop out.
func (g *generator) followups(eps []Episode) []Followup {
	r := g.r
	base := 1.3 + 1.4*r.Float64()
	slope := 0.08 + 0.2*r.Float64()
	for _, e := range eps {
		if e.ExitReason != "" && e.ExitReason != exitCompleted {
			slope *= 0.4
		}
	}
	firstMonth := eps[0].Start.Month()
	var out []Followup
	last := Month(math.MinInt32)
	for _, e := range eps {
		end := PeriodEnd.Month()
		if e.Ended {
			end = e.Exit.Month()
		}
		for mo := max(e.Start.Month(), last+1); mo <= end; mo++ {
			v := base + slope*float64(mo-firstMonth) + 0.6*r.NormFloat64()
			out = append(out, Followup{Month: mo, GoalProgress: min(5, max(1, int(math.Round(v))))})
			last = mo
		}
	}
	return out
}

// survey: most who ended an episode answer the exit survey once (about their last exit);
// half of those still in an episode, and a few who stayed four months or more, answer the
// ongoing survey.
func (g *generator) survey(eps []Episode) []Answer {
	r, m := g.r, g.m
	last := eps[len(eps)-1]
	var ended *Episode
	for i := range eps {
		if eps[i].Ended {
			ended = &eps[i]
		}
	}
	ongoing := !last.Ended
	long := eps[0].Ended && float64(eps[0].Exit-eps[0].Start) >= 4*daysPerMonth
	var out []Answer
	for _, inst := range m.instruments {
		var take bool
		switch inst.code {
		case instrumentOngoing:
			take = (ongoing && r.Float64() < ongoingSurveyRate) || (!ongoing && long && r.Float64() < midSurveyRate)
		case instrumentExit:
			take = ended != nil && r.Float64() < exitSurveyRate
		}
		if !take {
			continue
		}
		for _, q := range inst.questions {
			if r.Float64() < itemSkipRate {
				continue
			}
			agree := defaultQuestionAgree
			if v, ok := questionAgree[q]; ok {
				agree = v
			}
			if q == questionCloser && ended != nil {
				agree = closerToWorkAgree[m.outcomeGroup(ended.Outcome)]
			}
			ans := m.disagree.pick(r)
			if r.Float64() < agree {
				ans = m.agreeCodes.pick(r)
			}
			out = append(out, Answer{Instrument: inst.code, Question: q, Answer: ans})
		}
	}
	return out
}

func (m *model) outcomeGroup(outcome string) string {
	switch {
	case contains(m.workStudies, outcome):
		return groupWorkStudies
	case contains(m.ordinary, outcome):
		return groupOrdinary
	}
	return ""
}
