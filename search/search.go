// Package search is the Elasticsearch side of kratos-hooks: the profiles index (versioned indices behind one
// alias, with an explicit mapping), the bulk writer that the index workers share, and the profile search.
//
// The index is a projection of the Postgres profiles table and nothing else: documents are written with the
// profile's revision as their external version, so an older write can never replace a newer one. This
// package knows nothing of profiles or jobs; package sync turns a profile row into a Document.
package search

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// Config says where the cluster is and which alias holds the profiles.
type Config struct {
	// Addresses are the nodes' base URLs (http:// or https://).
	Addresses []string
	// Username and Password, or APIKey (base64 "id:key", as Elasticsearch prints it), for a secured cluster.
	Username string
	Password string
	APIKey   string
	// CACert is PEM: the certificate authorities to trust instead of the system's.
	CACert []byte
	// Alias is the name every read and write goes through. Its indices are <Alias>-v1, <Alias>-v2, …
	Alias string
	// RequestTimeout bounds each request, a bulk flush included. Default 30 s.
	RequestTimeout time.Duration
}

// Index is the profiles index of one cluster. It is safe for concurrent use.
type Index struct {
	es      *elasticsearch.Client
	alias   string
	timeout time.Duration
}

// New returns the index described by cfg. It does not contact the cluster: an outage must not stop the
// service from starting (see Ensure and Health).
func New(cfg Config) (*Index, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("no Elasticsearch address")
	}
	if err := ValidateAlias(cfg.Alias); err != nil {
		return nil, err
	}
	if cfg.APIKey != "" && (cfg.Username != "" || cfg.Password != "") {
		return nil, errors.New("both an API key and a username/password are set: use one")
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if len(cfg.CACert) > 0 && !x509.NewCertPool().AppendCertsFromPEM(cfg.CACert) {
		return nil, errors.New("the CA certificate holds no PEM certificate")
	}
	// The client's own transport has no timeouts at all: a cluster that accepts connections and never answers
	// would hold every index job until its River timeout. Bound each phase instead.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	transport.ResponseHeaderTimeout = cfg.RequestTimeout
	transport.MaxIdleConnsPerHost = 16
	es, err := elasticsearch.NewClient(elasticsearch.Config{
		Addresses: cfg.Addresses,
		Username:  cfg.Username,
		Password:  cfg.Password,
		APIKey:    cfg.APIKey,
		CACert:    cfg.CACert,
		Transport: transport,
		// Retries of a failed request happen at the job level (River, with backoff), where a failure is
		// visible; one quick retry here rides over a node restarting behind a load balancer.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch client: %w", err)
	}
	return &Index{es: es, alias: cfg.Alias, timeout: cfg.RequestTimeout}, nil
}

// Alias is the name every read and write goes through.
func (ix *Index) Alias() string { return ix.alias }

// Close releases the client's connections. Close writers first.
func (ix *Index) Close(ctx context.Context) error {
	return ix.es.Close(ctx)
}

// maxAliasLength leaves room for the "-vNNN" suffix within Elasticsearch's 255-byte limit on index names.
const maxAliasLength = 200

// ValidateAlias checks name against Elasticsearch's rules for index names, so that a bad ELASTICSEARCH_INDEX
// fails at start-up rather than on the first write.
func ValidateAlias(name string) error {
	switch {
	case name == "":
		return errors.New("index name is empty")
	case len(name) > maxAliasLength:
		return fmt.Errorf("index name is longer than %d bytes", maxAliasLength)
	case name == "." || name == "..":
		return fmt.Errorf("index name %q is not allowed", name)
	case strings.ContainsAny(name[:1], "-_+"):
		return fmt.Errorf("index name %q must not start with -, _ or +", name)
	case strings.ContainsAny(name, `\/*?"<>| ,#:`):
		return fmt.Errorf(`index name %q must not contain \ / * ? " < > | , # : or a space`, name)
	case strings.ToLower(name) != name:
		return fmt.Errorf("index name %q must be lower case", name)
	}
	return nil
}

// ResponseError is an error answer from Elasticsearch.
type ResponseError struct {
	Status int
	Type   string
	Reason string
}

func (e *ResponseError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("elasticsearch answered %d", e.Status)
	}
	return fmt.Sprintf("elasticsearch answered %d %s: %s", e.Status, e.Type, e.Reason)
}

// perform sends req under the request timeout and decodes a 2xx body into out (when out is not nil). Any
// other answer is a *ResponseError.
func (ix *Index) perform(ctx context.Context, req esapi.Request, out any) error {
	ctx, cancel := context.WithTimeout(ctx, ix.timeout)
	defer cancel()
	res, err := req.Do(ctx, ix.es)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if res.IsError() {
		return responseError(res.StatusCode, body)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func responseError(status int, body []byte) *ResponseError {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	re := &ResponseError{Status: status}
	if json.Unmarshal(body, &e) != nil || len(e.Error) == 0 {
		return re
	}
	var detail struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(e.Error, &detail) == nil {
		re.Type, re.Reason = detail.Type, detail.Reason
	} else {
		// Some answers (a 404 from a HEAD-like lookup) carry the error as a plain string.
		re.Reason = string(bytes.Trim(e.Error, `"`))
	}
	return re
}

// isStatus reports whether err is an Elasticsearch answer with that status.
func isStatus(err error, status int) bool {
	var re *ResponseError
	return errors.As(err, &re) && re.Status == status
}
