package kratos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ErrNotFound is returned when Kratos answers 404 for an identity: it does not exist (any more).
var ErrNotFound = errors.New("kratos: identity not found")

// APIError is a non-2xx answer from Kratos other than a 404 for an identity.
type APIError struct {
	Method string
	Path   string
	Status int
	// Message is Kratos's error.message (and reason, if any), not the whole body.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("kratos: %s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
}

// Temporary reports whether trying again later may succeed (5xx, 429).
func (e *APIError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// Client calls the Kratos admin API. It is safe for concurrent use.
type Client struct {
	base *url.URL
	http *http.Client
}

// maxBody caps what we read from Kratos: a page of 1,000 large identities stays well under it.
const maxBody = 256 << 20

// MaxPageSize is the largest page this client asks for. Kratos enforces no maximum (and a negative size
// crashes its handler), so the client enforces one.
const MaxPageSize = 2000

// NewClient returns a client for the admin API at adminURL, the admin base URL without "/admin"
// (for example http://kratos:4434). A nil httpClient gets one with a 10 s timeout that keeps up to 64 idle
// connections.
func NewClient(adminURL string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(adminURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("kratos admin URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kratos admin URL %q: want http(s)://host[:port]", adminURL)
	}
	if strings.HasSuffix(u.Path, "/admin") {
		return nil, fmt.Errorf("kratos admin URL %q: give the base URL without /admin", adminURL)
	}
	if httpClient == nil {
		// http.DefaultTransport keeps 2 idle connections per host: with more concurrent readers than that,
		// every request beyond the second dials a new connection and closes it after, which costs both sides
		// more than the request.
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConnsPerHost = 64
		httpClient = &http.Client{Timeout: 10 * time.Second, Transport: transport}
	}
	return &Client{base: u, http: httpClient}, nil
}

// BaseURL is the admin base URL the client was made with.
func (c *Client) BaseURL() string { return c.base.String() }

// GetIdentity reads one identity. It returns ErrNotFound when Kratos has no such identity.
func (c *Client) GetIdentity(ctx context.Context, id uuid.UUID) (*Identity, error) {
	var ident Identity
	err := c.do(ctx, http.MethodGet, "/admin/identities/"+id.String(), nil, nil, &ident, nil)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return nil, err
	}
	return &ident, nil
}

// ListOpts selects a page of GET /admin/identities.
type ListOpts struct {
	// PageSize is the number of identities per page, 1 to MaxPageSize; 0 means Kratos's default (250).
	PageSize int
	// PageToken is the token of the page to read, from the previous Page's NextPageToken; empty for the
	// first page.
	PageToken string
	// CredentialsIdentifier filters on an exact credentials identifier (an e-mail address, a phone number).
	CredentialsIdentifier string
	// IDs filters on identity ids (GetIdentities: at most MaxIDsPerList).
	IDs []uuid.UUID
}

// Page is one page of identities, in Kratos's order (by id).
type Page struct {
	Identities []Identity
	// NextPageToken is empty on the last page.
	NextPageToken string
}

// ListIdentities reads one page of identities with keyset pagination.
func (c *Client) ListIdentities(ctx context.Context, opts ListOpts) (Page, error) {
	if opts.PageSize < 0 || opts.PageSize > MaxPageSize {
		return Page{}, fmt.Errorf("kratos: page size %d out of range 0..%d", opts.PageSize, MaxPageSize)
	}
	q := url.Values{}
	if opts.PageSize > 0 {
		q.Set("page_size", strconv.Itoa(opts.PageSize))
	}
	if opts.PageToken != "" {
		q.Set("page_token", opts.PageToken)
	}
	if opts.CredentialsIdentifier != "" {
		q.Set("credentials_identifier", opts.CredentialsIdentifier)
	}
	for _, id := range opts.IDs {
		q.Add("ids", id.String())
	}
	var page Page
	var header http.Header
	if err := c.do(ctx, http.MethodGet, "/admin/identities", q, nil, &page.Identities, &header); err != nil {
		return Page{}, err
	}
	next, err := NextPageToken(header.Values("Link"))
	if err != nil {
		return Page{}, err
	}
	page.NextPageToken = next
	return page, nil
}

// CreateIdentity creates an identity through the admin API. No webhook fires for it.
func (c *Client) CreateIdentity(ctx context.Context, body CreateIdentityBody) (*Identity, error) {
	var ident Identity
	if err := c.do(ctx, http.MethodPost, "/admin/identities", nil, body, &ident, nil); err != nil {
		return nil, err
	}
	return &ident, nil
}

// BatchCreateLimit is the most identities one PATCH /admin/identities call takes.
const BatchCreateLimit = 2000

// BatchCreateIdentities creates up to BatchCreateLimit identities in one call and returns their ids in the
// order given. Create them without credentials where you can: Kratos hashes passwords with bcrypt.
func (c *Client) BatchCreateIdentities(ctx context.Context, bodies []CreateIdentityBody) ([]uuid.UUID, error) {
	if len(bodies) > BatchCreateLimit {
		return nil, fmt.Errorf("kratos: %d identities in one batch, at most %d", len(bodies), BatchCreateLimit)
	}
	type patch struct {
		Create  CreateIdentityBody `json:"create"`
		PatchID uuid.UUID          `json:"patch_id"`
	}
	req := struct {
		Identities []patch `json:"identities"`
	}{Identities: make([]patch, len(bodies))}
	for i, b := range bodies {
		req.Identities[i] = patch{Create: b, PatchID: uuid.New()}
	}
	var resp struct {
		Identities []struct {
			Action     string     `json:"action"`
			IdentityID *uuid.UUID `json:"identity"`
			PatchID    uuid.UUID  `json:"patch_id"`
			Error      *struct {
				Message string `json:"message"`
				Reason  string `json:"reason"`
			} `json:"error"`
		} `json:"identities"`
	}
	if err := c.do(ctx, http.MethodPatch, "/admin/identities", nil, req, &resp, nil); err != nil {
		return nil, err
	}
	byPatch := make(map[uuid.UUID]uuid.UUID, len(resp.Identities))
	for _, r := range resp.Identities {
		if r.Action != "create" || r.IdentityID == nil {
			msg := "unknown error"
			if r.Error != nil {
				msg = strings.TrimSpace(r.Error.Message + " " + r.Error.Reason)
			}
			return nil, fmt.Errorf("kratos: batch create: %s", msg)
		}
		byPatch[r.PatchID] = *r.IdentityID
	}
	ids := make([]uuid.UUID, len(bodies))
	for i, p := range req.Identities {
		id, ok := byPatch[p.PatchID]
		if !ok {
			return nil, fmt.Errorf("kratos: batch create: no result for item %d", i)
		}
		ids[i] = id
	}
	return ids, nil
}

// UpdateIdentity replaces an identity's schema, traits, state and public metadata. No webhook fires.
func (c *Client) UpdateIdentity(ctx context.Context, id uuid.UUID, body UpdateIdentityBody) (*Identity, error) {
	var ident Identity
	if err := c.do(ctx, http.MethodPut, "/admin/identities/"+id.String(), nil, body, &ident, nil); err != nil {
		return nil, err
	}
	return &ident, nil
}

// DeleteIdentity deletes an identity. No webhook fires.
func (c *Client) DeleteIdentity(ctx context.Context, id uuid.UUID) error {
	err := c.do(ctx, http.MethodDelete, "/admin/identities/"+id.String(), nil, nil, nil, nil)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return err
}

// Alive checks that the admin API answers (GET /admin/health/alive).
func (c *Client) Alive(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/admin/health/alive", nil, nil, nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, header *http.Header) error {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()

	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("kratos: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("kratos: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("kratos: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	limited := io.LimitReader(resp.Body, maxBody)

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: errorMessage(limited)}
	}
	if header != nil {
		*header = resp.Header
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, limited)
		return nil
	}
	if err := json.NewDecoder(limited).Decode(out); err != nil {
		return fmt.Errorf("kratos: decode %s %s: %w", method, path, err)
	}
	return nil
}

// errorMessage pulls message and reason out of Kratos's {"error":{...}} envelope.
func errorMessage(r io.Reader) string {
	var env struct {
		Error struct {
			Message string `json:"message"`
			Reason  string `json:"reason"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	if json.Unmarshal(b, &env) == nil && env.Error.Message != "" {
		if env.Error.Reason != "" {
			return env.Error.Message + ": " + env.Error.Reason
		}
		return env.Error.Message
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Schema is an identity schema Kratos serves.
type Schema struct {
	ID     string          `json:"id"`
	Schema json.RawMessage `json:"schema"`
}

// ListSchemas reads the identity schemas Kratos is configured with. The admin port redirects this to the
// public port, so it needs the public base URL to be reachable too.
func (c *Client) ListSchemas(ctx context.Context) ([]Schema, error) {
	var schemas []Schema
	if err := c.do(ctx, http.MethodGet, "/admin/schemas", nil, nil, &schemas, nil); err != nil {
		return nil, err
	}
	return schemas, nil
}
