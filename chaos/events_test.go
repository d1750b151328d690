package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// event is one webhook delivery as Kratos makes it: the hook point, the identity it is about and the exact
// bytes of the body, which Kratos builds once and resends unchanged on a retry.
type event struct {
	hook     string // the URL path under /hooks/, e.g. "registration/after"
	identity uuid.UUID
	body     []byte
}

// newEvent renders the body of hook for p: the golden rendering of jsonnet/webhook.jsonnet on a ctx
// captured from Kratos (jsonnet/testdata/webhook), with a fresh flow id and p's id and traits. A login
// carries its authentication time.
func newEvent(t *testing.T, hook string, p person, authenticatedAt time.Time) event {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "jsonnet", "testdata", "webhook", strings.ReplaceAll(hook, "/", "-")+".json"))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))

	flow := doc["flow"].(map[string]any)
	oldFlow := flow["id"].(string)
	flowID := uuid.NewString()
	flow["id"] = flowID
	identity := doc["identity"].(map[string]any)
	identity["id"] = p.ID.String()
	identity["traits"] = p.Traits
	request := doc["request"].(map[string]any)
	request["url"] = strings.ReplaceAll(request["url"].(string), oldFlow, flowID)
	if session, ok := doc["session"].(map[string]any); ok {
		at := authenticatedAt.UTC().Format(time.RFC3339Nano)
		session["authenticated_at"] = at
		for _, m := range session["authentication_methods"].([]any) {
			m.(map[string]any)["completed_at"] = at
		}
	}
	body, err := json.Marshal(doc)
	require.NoError(t, err)
	return event{hook: hook, identity: p.ID, body: body}
}

// deliveryOpts says how to deliver events.
type deliveryOpts struct {
	// Senders is how many requests are in flight at once (Kratos sends every hook from its own goroutine).
	Senders int
	// PerSecond paces the deliveries, so that they arrive over a while instead of all at once; 0: as fast as
	// the senders go.
	PerSecond int
	// Retry retries 5xx, 429 and network errors after the Retry-After the service asked for (1 s when it
	// did not), with the same bytes, as Kratos does. Kratos gives up after three attempts; these senders go
	// on until the test's context ends, so that every event is acknowledged in the end. Without Retry, an
	// event that is not acknowledged at the first attempt is a failure.
	Retry bool
}

// refusal is a 503 answer.
type refusal struct {
	at         time.Time // when the request was sent
	took       time.Duration
	retryAfter string
}

// delivery sends events to the HTTP process the way Kratos's webhook client does (a new connection for
// every request, Authorization: Bearer) and counts the answers.
type delivery struct {
	events []event
	acked  []atomic.Bool

	requests     atomic.Int64
	acknowledged atomic.Int64
	duplicates   atomic.Int64 // acknowledged as already recorded

	mu          sync.Mutex
	statuses    map[int]int
	failures    []string // network errors, timeouts, unexpected statuses
	unavailable []refusal
	latencies   []time.Duration // of the acknowledgements

	done chan struct{}
}

// startDelivery delivers events in the background, in the order given; wait for it with wait.
func startDelivery(t *testing.T, serviceURL string, events []event, opts deliveryOpts) *delivery {
	t.Helper()
	d := &delivery{events: events, acked: make([]atomic.Bool, len(events)), statuses: map[int]int{}, done: make(chan struct{})}
	ctx := testenv.Context(t)
	// Kratos gives each attempt 30 s.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	work := make(chan int)
	var wg sync.WaitGroup
	for range max(opts.Senders, 1) {
		wg.Go(func() {
			for i := range work {
				d.deliver(ctx, client, serviceURL, i, opts.Retry)
			}
		})
	}
	go func() {
		defer close(d.done)
		start := time.Now()
		for i := range events {
			if opts.PerSecond > 0 {
				due := start.Add(time.Duration(i) * time.Second / time.Duration(opts.PerSecond))
				time.Sleep(time.Until(due)) // the load's shape, not synchronisation
			}
			select {
			case work <- i:
			case <-ctx.Done():
			}
		}
		close(work)
		wg.Wait()
	}()
	return d
}

func (d *delivery) deliver(ctx context.Context, client *http.Client, serviceURL string, i int, retry bool) {
	ev := d.events[i]
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, serviceURL+"/hooks/"+ev.hook, bytes.NewReader(ev.body))
		if err != nil {
			d.fail(err.Error())
			return
		}
		req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
		req.Header.Set("Content-Type", "application/json")
		d.requests.Add(1)
		start := time.Now()
		resp, err := client.Do(req)
		took := time.Since(start)
		wait := time.Second
		switch {
		case err != nil:
			d.fail(fmt.Sprintf("%s for %s: %v (after %s)", ev.hook, ev.identity, err, took.Round(time.Millisecond)))
		default:
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			d.mu.Lock()
			d.statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusServiceUnavailable {
				d.unavailable = append(d.unavailable, refusal{at: start, took: took, retryAfter: resp.Header.Get("Retry-After")})
			}
			d.mu.Unlock()
			if resp.StatusCode == http.StatusOK {
				var answer struct {
					Duplicate bool `json:"duplicate"`
				}
				if json.Unmarshal(body, &answer) == nil && answer.Duplicate {
					d.duplicates.Add(1)
				}
				d.acked[i].Store(true)
				d.acknowledged.Add(1)
				d.mu.Lock()
				d.latencies = append(d.latencies, took)
				d.mu.Unlock()
				return
			}
			if resp.StatusCode != http.StatusServiceUnavailable || !retry {
				d.fail(fmt.Sprintf("%s for %s: %d %s", ev.hook, ev.identity, resp.StatusCode, body))
			}
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(s) * time.Second
			}
		}
		if !retry {
			return
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

func (d *delivery) fail(msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures = append(d.failures, msg)
}

// wait waits until every event was delivered (or given up on) and returns the ids of the identities whose
// events were acknowledged, each once.
func (d *delivery) wait(t *testing.T, timeout time.Duration) []uuid.UUID {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("delivery not finished after %s: %d of %d events acknowledged", timeout, d.acknowledged.Load(), len(d.events))
	}
	seen := map[uuid.UUID]bool{}
	var ids []uuid.UUID
	for i, ev := range d.events {
		if d.acked[i].Load() && !seen[ev.identity] {
			seen[ev.identity] = true
			ids = append(ids, ev.identity)
		}
	}
	return ids
}

// ackedEvents is the number of events (not requests) acknowledged so far.
func (d *delivery) ackedEvents() int {
	n := 0
	for i := range d.acked {
		if d.acked[i].Load() {
			n++
		}
	}
	return n
}

// requireNoFailures fails the test on any network error, timeout or status other than 200 and 503.
func (d *delivery) requireNoFailures(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.failures) > 0 {
		shown := d.failures[:min(len(d.failures), 10)]
		t.Fatalf("%d deliveries failed (answers by status: %v); the first:\n%s", len(d.failures), d.statuses, strings.Join(shown, "\n"))
	}
}

// latency returns the 99th percentile and the longest time an acknowledgement took.
func (d *delivery) latency() (p99, longest time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.latencies) == 0 {
		return 0, 0
	}
	sorted := slices.Clone(d.latencies)
	slices.Sort(sorted)
	return sorted[len(sorted)*99/100], sorted[len(sorted)-1]
}

// latencyText says how long acknowledgements took, for the test's log.
func (d *delivery) latencyText() string {
	p99, longest := d.latency()
	return fmt.Sprintf("acknowledgements took p99 %s, at most %s", p99.Round(time.Millisecond), longest.Round(time.Millisecond))
}

// refusalsSince is the number of 503 answers to requests sent after t.
func (d *delivery) refusalsSince(t time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, r := range d.unavailable {
		if r.at.After(t) {
			n++
		}
	}
	return n
}

// atLeast is a Poll condition.
func atLeast(what string, got, want int) error {
	if got < want {
		return fmt.Errorf("%s: %d, want at least %d", what, got, want)
	}
	return nil
}
