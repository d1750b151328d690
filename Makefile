# One entry point for people and CI. Everything real (Postgres, Elasticsearch, Kratos) is provisioned by
# scripts/lib.sh into ${XDG_CACHE_HOME:-~/.cache}/kratos-hooks, outside the clone.
.PHONY: up demo down status test bench build fmt vet

up: ## start Postgres, Elasticsearch, Kratos and kratos-hooks on 127.0.0.1
	scripts/stack.sh up

demo: ## register users through Kratos and show what kratos-hooks made of them
	scripts/stack.sh demo

down: ## stop the local stack
	scripts/stack.sh down

status:
	scripts/stack.sh status

test: ## provision the services, run every test, stop the services
	scripts/test.sh

bench: ## run the benchmarks beside their floors and write docs/benchmarks.md (wants a quiet machine)
	scripts/bench.sh

build:
	go build -o bin/kratos-hooks ./cmd/kratos-hooks

fmt:
	gofmt -w .

vet:
	go vet ./...
