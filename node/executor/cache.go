package executor

import (
	"container/list"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/samsyn/samsyn/queries/disclosure"
)

// releaseCache keeps recent protected tables. It is safe because the cell key method is
// deterministic: the same query with the same parameters on the same data snapshot under the
// same policy releases exactly the same table, so answering from the cache reveals nothing a
// fresh run would not. Entries are keyed by query hash, canonical parameters and snapshot.
type releaseCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used
	items map[string]*list.Element
}

type cached struct {
	key    string
	table  arrow.Record
	report disclosure.Report
}

func newReleaseCache(max int) *releaseCache {
	return &releaseCache{max: max, order: list.New(), items: map[string]*list.Element{}}
}

func cacheKey(queryHash string, params map[string]string, snapshot string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(queryHash + "\x00" + snapshot)
	for _, k := range keys {
		b.WriteString("\x00" + k + "=" + params[k])
	}
	return b.String()
}

// get returns a retained table the caller must release.
func (c *releaseCache) get(key string) (arrow.Record, disclosure.Report, bool) {
	if c == nil || c.max <= 0 {
		return nil, disclosure.Report{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, disclosure.Report{}, false
	}
	c.order.MoveToFront(el)
	e := el.Value.(*cached)
	e.table.Retain()
	return e.table, e.report, true
}

// put keeps a reference to table.
func (c *releaseCache) put(key string, table arrow.Record, rep disclosure.Report) {
	if c == nil || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[key]; ok {
		return
	}
	table.Retain()
	c.items[key] = c.order.PushFront(&cached{key: key, table: table, report: rep})
	for c.order.Len() > c.max {
		el := c.order.Back()
		e := el.Value.(*cached)
		c.order.Remove(el)
		delete(c.items, e.key)
		e.table.Release()
	}
}

// clear releases every entry.
func (c *releaseCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Front(); el != nil; el = el.Next() {
		el.Value.(*cached).table.Release()
	}
	c.order.Init()
	c.items = map[string]*list.Element{}
}

// contributionCache keeps recent unmasked contributions, keyed as releaseCache is (and by
// the federation, which decides the cells only this node can fill). Like the protected
// tables, a contribution is a deterministic function of its key, so a repeat reveals nothing
// new; it never leaves the node unmasked, and each round masks it afresh.
type contributionCache struct {
	mu    sync.Mutex
	max   int
	order *list.List
	items map[string]*list.Element
}

type cachedContribution struct {
	key string
	c   Contribution
}

func newContributionCache(max int) *contributionCache {
	return &contributionCache{max: max, order: list.New(), items: map[string]*list.Element{}}
}

// get returns a copy of a cached contribution.
func (c *contributionCache) get(key string) (*Contribution, bool) {
	if c.max <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	out := el.Value.(*cachedContribution).c
	out.Vector = append([]uint64(nil), out.Vector...)
	return &out, true
}

func (c *contributionCache) put(key string, v *Contribution) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return
	}
	cp := *v
	cp.Vector = append([]uint64(nil), v.Vector...)
	c.items[key] = c.order.PushFront(&cachedContribution{key: key, c: cp})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cachedContribution).key)
	}
}

func (c *contributionCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range c.items {
		clear(el.Value.(*cachedContribution).c.Vector)
	}
	c.order.Init()
	clear(c.items)
}
