// Package chaos holds the fault-injection tests (issue 7): each runs kratos-hooks as real processes, an HTTP
// process (serve --role http) and a worker process (serve --role worker), against a Kratos, a Postgres and
// an Elasticsearch it may stop, restart or kill, sends the webhook bodies Kratos would send, and counts what
// arrived against Kratos's admin list and the search index itself, never against the service's own counts.
//
// Run them with the rest: `make test`, or `scripts/test.sh -run . -v ./chaos/` for these alone.
package chaos
