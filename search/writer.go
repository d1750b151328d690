package search

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/google/uuid"
)

// WriterOpts configures a Writer.
type WriterOpts struct {
	// Index is the concrete index to write to; empty means the alias, with require_alias set so that a write
	// can never create an index in the alias's place.
	Index string
	// FlushInterval is how long an item may wait for others to share its bulk request. Default 1 s.
	FlushInterval time.Duration
	// FlushBytes sends a bulk request as soon as this much is waiting, so that under load requests leave
	// full instead of on the clock. It must be reachable by the documents that can wait at once (the index
	// queue's MaxWorkers), or every request waits for FlushInterval: 1,000 small profiles make about 500 KiB.
	// Default 256 KiB: 200 to 500 profiles, a request Elasticsearch takes in tens of milliseconds.
	FlushBytes int
	// WriteManyBytes is the most a request of WriteMany carries (at least one item each). Default 8 MiB, well
	// below Elasticsearch's http.max_content_length (100 MB): a page of identities with large traits goes
	// out in several requests.
	WriteManyBytes int
	// Requests is how many bulk requests may be in flight at once. Each fills its own batch, so more of them
	// means smaller batches. Default 1.
	Requests int
	Logger   *slog.Logger
	// ObserveBulkFunc, if set, is told of every bulk request: err is set when the request failed as a whole
	// (its items then fail with it); otherwise items is how many items Elasticsearch answered and failed how
	// many of those it refused (version conflicts and deletes of absent documents are not refusals).
	ObserveBulkFunc func(items, failed int, err error)
}

// Writer sends documents to Elasticsearch in bulk requests shared by all its callers: Put and Delete block
// until their own item is acknowledged, while many callers' items travel in one request. WriteMany sends a
// batch a caller has in hand in requests of its own. It is safe for concurrent use.
type Writer struct {
	bi           esutil.BulkIndexer
	ix           *Index
	index        string
	requireAlias bool
	observe      func(items, failed int, err error)
	maxBatch     int // WriterOpts.WriteManyBytes
}

// Outcome is what Elasticsearch did with one item.
type Outcome int

const (
	// Written: the document was indexed or deleted at its version.
	Written Outcome = iota + 1
	// Stale: the index already holds this version or a newer one, so the item was refused. Not an error: a
	// newer write got there first.
	Stale
	// Absent: a delete found no document (never indexed, or deleted before).
	Absent
)

func (o Outcome) String() string {
	switch o {
	case Written:
		return "written"
	case Stale:
		return "stale"
	case Absent:
		return "absent"
	}
	return "unknown"
}

// ItemError is Elasticsearch's refusal of one item of a bulk request.
type ItemError struct {
	Status int
	Type   string
	Reason string
}

func (e *ItemError) Error() string {
	return fmt.Sprintf("elasticsearch refused the item: %d %s: %s", e.Status, e.Type, e.Reason)
}

// Permanent reports whether sending the same item again gives the same answer (a document the mapping
// cannot take), as opposed to a refusal that may pass later (a full queue, a missing index).
func (e *ItemError) Permanent() bool {
	return e.Status == http.StatusBadRequest
}

// ErrNoAlias means the alias does not exist (yet): Ensure creates it.
var ErrNoAlias = errors.New("the index alias does not exist")

type flushCancelKey struct{}

// NewWriter starts a writer. Close it before closing ix.
func (ix *Index) NewWriter(opts WriterOpts) (*Writer, error) {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.FlushBytes <= 0 {
		opts.FlushBytes = 256 << 10
	}
	if opts.WriteManyBytes <= 0 {
		opts.WriteManyBytes = 8 << 20
	}
	if opts.Requests <= 0 {
		opts.Requests = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{ix: ix, index: opts.Index, requireAlias: opts.Index == "", observe: opts.ObserveBulkFunc, maxBatch: opts.WriteManyBytes}
	if w.requireAlias {
		w.index = ix.alias
	}
	logger := opts.Logger
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{
		Client:        ix.es,
		NumWorkers:    opts.Requests,
		FlushInterval: opts.FlushInterval,
		FlushBytes:    opts.FlushBytes,
		// Callers keep adding while a request is in flight; they join the next batch instead of waiting.
		QueueSizeMultiplier: 1024,
		FilterPath:          filterPath,
		// The indexer sends with a background context: bound each request here, so that a cluster that never
		// answers fails the batch (and its jobs retry) instead of holding it forever.
		OnFlushStart: func(ctx context.Context) context.Context {
			ctx, cancel := context.WithTimeout(ctx, ix.timeout)
			return context.WithValue(ctx, flushCancelKey{}, cancel)
		},
		OnFlushEnd: func(ctx context.Context) {
			if cancel, ok := ctx.Value(flushCancelKey{}).(context.CancelFunc); ok {
				cancel()
			}
		},
		OnError: func(ctx context.Context, err error) {
			logger.WarnContext(ctx, "elasticsearch bulk request failed; its jobs will retry", "index", w.index, "error", err)
			if opts.ObserveBulkFunc != nil {
				opts.ObserveBulkFunc(0, 0, err)
			}
		},
		Decoder: bulkDecoder{w: w},
	})
	if err != nil {
		return nil, fmt.Errorf("bulk indexer: %w", err)
	}
	w.bi = bi
	return w, nil
}

// Put indexes doc with doc.Revision as its external version. It returns once Elasticsearch has acknowledged
// it (Written) or refused it as older than what it holds (Stale).
func (w *Writer) Put(ctx context.Context, doc Document) (Outcome, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return 0, fmt.Errorf("encode document %s: %w", doc.IdentityID, err)
	}
	return w.do(ctx, "index", doc.IdentityID, doc.Revision, body)
}

// Delete deletes a document with revision as its external version: it is refused (Stale) if the index holds
// a newer revision. A document that is not there is Absent, not an error. Elasticsearch remembers a delete's
// version only for index.gc_deletes (60 s): decide whether to delete from the current profile row, never
// from an old job.
func (w *Writer) Delete(ctx context.Context, id uuid.UUID, revision int64) (Outcome, error) {
	return w.do(ctx, "delete", id, revision, nil)
}

func (w *Writer) do(ctx context.Context, action string, id uuid.UUID, version int64, body []byte) (Outcome, error) {
	type result struct {
		outcome Outcome
		err     error
	}
	// Buffered: the indexer calls back from its own goroutine and must never wait for a caller that gave up.
	done := make(chan result, 1)
	item := esutil.BulkIndexerItem{
		Index:        w.index,
		Action:       action,
		DocumentID:   id.String(),
		Version:      &version,
		VersionType:  "external",
		RequireAlias: w.requireAlias,
		OnSuccess: func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem) {
			done <- result{outcome: Written}
		},
		OnFailure: func(_ context.Context, _ esutil.BulkIndexerItem, res esutil.BulkIndexerResponseItem, err error) {
			outcome, err := w.failure(action, res, err)
			done <- result{outcome: outcome, err: err}
		},
	}
	if body != nil {
		item.Body = bytes.NewReader(body)
	}
	if err := w.bi.Add(ctx, item); err != nil {
		return 0, fmt.Errorf("queue %s of %s: %w", action, id, err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			return 0, fmt.Errorf("%s %s at version %d: %w", action, id, version, r.err)
		}
		return r.outcome, nil
	case <-ctx.Done():
		// The item may still be sent; that is harmless, since its version decides whether it lands.
		return 0, fmt.Errorf("wait for %s of %s: %w", action, id, ctx.Err())
	}
}

// Write is one item of WriteMany: the document to index at its revision, or, without one, the delete of
// the document of ID at Revision.
type Write struct {
	ID       uuid.UUID
	Revision int64
	Doc      *Document
}

func (wr Write) action() string {
	if wr.Doc == nil {
		return "delete"
	}
	return "index"
}

// filterPath is the part of a bulk answer the writer reads: less for Elasticsearch to write and for us to
// parse.
var filterPath = []string{"errors", "items.*.status", "items.*.result", "items.*._version", "items.*.error.type", "items.*.error.reason"}

// WriteMany sends writes at once, in bulk requests of their own (one, unless they exceed WriteManyBytes), and
// answers each as Put or Delete would: outcomes[i] and errs[i] are what Put or Delete returns for writes[i].
// It is for a caller that has a batch in hand (a reconcile page's documents), which need not wait for
// others to fill a shared request or for FlushInterval. err is set when a request failed as a whole: then
// nothing is known about the items not answered yet, and none of the answers is returned.
func (w *Writer) WriteMany(ctx context.Context, writes []Write) (outcomes []Outcome, errs []error, err error) {
	outcomes, errs = make([]Outcome, len(writes)), make([]error, len(writes))
	var body, item bytes.Buffer
	var sent []int // the writes in body, in order
	for i, wr := range writes {
		item.Reset()
		if err := w.encodeItem(&item, wr); err != nil {
			errs[i] = err
			continue
		}
		if len(sent) > 0 && body.Len()+item.Len() > w.maxBatch {
			if err := w.bulk(ctx, &body, writes, sent, outcomes, errs); err != nil {
				return nil, nil, err
			}
			body.Reset()
			sent = sent[:0]
		}
		body.Write(item.Bytes())
		sent = append(sent, i)
	}
	if len(sent) > 0 {
		if err := w.bulk(ctx, &body, writes, sent, outcomes, errs); err != nil {
			return nil, nil, err
		}
	}
	return outcomes, errs, nil
}

// bulkAction is the action line of a bulk item: one of its fields is set.
type bulkAction struct {
	Index  *bulkMeta `json:"index,omitempty"`
	Delete *bulkMeta `json:"delete,omitempty"`
}

// encodeItem writes a write's action line and, for an index, its document, as NDJSON.
func (w *Writer) encodeItem(buf *bytes.Buffer, wr Write) error {
	meta := &bulkMeta{Index: w.index, ID: wr.ID.String(), Version: wr.Revision, VersionType: "external", RequireAlias: w.requireAlias}
	action := bulkAction{Index: meta}
	if wr.Doc == nil {
		action = bulkAction{Delete: meta}
	}
	enc := json.NewEncoder(buf) // Encode ends each value with the newline NDJSON wants
	if err := enc.Encode(action); err != nil {
		return fmt.Errorf("encode bulk item %s: %w", wr.ID, err)
	}
	if wr.Doc != nil {
		if err := enc.Encode(wr.Doc); err != nil {
			return fmt.Errorf("encode document %s: %w", wr.ID, err)
		}
	}
	return nil
}

// bulk sends body, the items of writes[sent[0]], writes[sent[1]], ..., and records each answer in outcomes
// and errs.
func (w *Writer) bulk(ctx context.Context, body *bytes.Buffer, writes []Write, sent []int, outcomes []Outcome, errs []error) error {
	var res esutil.BulkIndexerResponse
	err := w.ix.perform(ctx, esapi.BulkRequest{Body: body, FilterPath: filterPath}, &res)
	if err == nil && len(res.Items) != len(sent) {
		err = fmt.Errorf("Elasticsearch answered %d items", len(res.Items))
	}
	if err != nil {
		if w.observe != nil {
			w.observe(0, 0, err)
		}
		return fmt.Errorf("bulk request of %d items: %w", len(sent), err)
	}
	failed := 0
	for j, item := range res.Items {
		i := sent[j]
		action := writes[i].action()
		if outcomes[i], errs[i] = w.answer(action, item[action]); errs[i] != nil {
			errs[i] = fmt.Errorf("%s %s at version %d: %w", action, writes[i].ID, writes[i].Revision, errs[i])
			failed++
		}
	}
	if w.observe != nil {
		w.observe(len(res.Items), failed, nil)
	}
	return nil
}

// bulkMeta is what an action line says of its item, as esutil.BulkIndexer writes it.
type bulkMeta struct {
	Index        string `json:"_index"`
	ID           string `json:"_id"`
	Version      int64  `json:"version"`
	VersionType  string `json:"version_type"`
	RequireAlias bool   `json:"require_alias,omitempty"`
}

// answer is what Elasticsearch's answer to one item of a bulk request means.
func (w *Writer) answer(action string, res esutil.BulkIndexerResponseItem) (Outcome, error) {
	if res.Error.Type == "" && res.Status <= 201 {
		return Written, nil
	}
	return w.failure(action, res, nil)
}

// failure sorts a failed item into the answers that are success in disguise and real errors.
func (w *Writer) failure(action string, res esutil.BulkIndexerResponseItem, err error) (Outcome, error) {
	switch {
	case err != nil:
		// The whole request failed (cluster unreachable, timeout): nothing is known about this item.
		return 0, err
	case res.Status == http.StatusConflict:
		return Stale, nil
	case action == "delete" && res.Status == http.StatusNotFound && res.Error.Type == "":
		return Absent, nil
	case res.Status == http.StatusNotFound && res.Error.Type == "index_not_found_exception" && w.requireAlias:
		return 0, fmt.Errorf("%w: %s", ErrNoAlias, w.index)
	}
	return 0, &ItemError{Status: res.Status, Type: res.Error.Type, Reason: res.Error.Reason}
}

// bulkDecoder reads a bulk response as the indexer's default decoder does, and counts its items on the way:
// it is the one place that sees each answered request as a whole.
type bulkDecoder struct {
	w *Writer
}

func (d bulkDecoder) UnmarshalFromReader(r io.Reader, blk *esutil.BulkIndexerResponse) error {
	if err := json.NewDecoder(r).Decode(blk); err != nil {
		return err
	}
	if d.w.observe != nil {
		failed := 0
		for _, item := range blk.Items {
			for action, res := range item {
				if _, err := d.w.answer(action, res); err != nil {
					failed++
				}
			}
		}
		d.w.observe(len(blk.Items), failed, nil)
	}
	return nil
}

// Close sends what is waiting and stops the writer. Stop its callers first.
func (w *Writer) Close(ctx context.Context) error {
	if err := w.bi.Close(ctx); err != nil {
		return fmt.Errorf("close bulk writer: %w", err)
	}
	return nil
}

// Stats is what a writer has sent so far.
type Stats struct {
	Requests uint64
	Items    uint64
	Failed   uint64
	// Busy is the time spent in bulk requests, added up.
	Busy time.Duration
}

// Stats returns counts since the writer started, of the requests Put and Delete share (not WriteMany's).
func (w *Writer) Stats() Stats {
	s := w.bi.Stats()
	return Stats{Requests: s.NumRequests, Items: s.NumAdded, Failed: s.NumFailed, Busy: time.Duration(s.FlushedMs) * time.Millisecond}
}
