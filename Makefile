# tiesmm: `make demo` shows a merge on synthetic checkpoints; `make test` is what CI runs.
GO      ?= go
BIN     := bin/tiesmm
DEMO    := demo
QEMU    ?= qemu-aarch64-static

.PHONY: build demo lint test test-race fuzz-short test-amd64-levels test-arm64 asm-check vet fuzz bench bench-quick bench-methods bench-report clean

build:
	$(GO) build -ldflags "-X main.commit=$$(git rev-parse HEAD 2>/dev/null)$$(git diff --quiet HEAD 2>/dev/null || echo -dirty)" -o $(BIN) ./cmd/tiesmm

demo: build
	./$(BIN) synth --params 50M --models 3 --seed 1 --lora-rank 16 --force $(DEMO)
	./$(BIN) merge --dry-run --force --base $(DEMO)/base --model $(DEMO)/ft1 --model $(DEMO)/ft2 --model $(DEMO)/ft3 --density 0.2 $(DEMO)/merged
	./$(BIN) merge --force --base $(DEMO)/base --model $(DEMO)/ft1 --model $(DEMO)/ft2 --model $(DEMO)/ft3 --density 0.2 $(DEMO)/merged
	./$(BIN) merge --force examples/ties.yml $(DEMO)/merged-mergekit
	@echo; echo "merged model: $(DEMO)/merged"; ls -l $(DEMO)/merged

# The whole suite: vet for both architectures, the tests natively with each
# kernel level forced, the noasm build, the engine and I/O under the race
# detector, the parsers' fuzz targets briefly, and the arm64 kernels under qemu.
test: vet asm-check
	$(GO) test ./...
	$(MAKE) test-amd64-levels
	$(GO) test -tags noasm ./kernels/ ./merge/
	$(MAKE) test-race
	$(MAKE) fuzz-short
	$(MAKE) test-arm64

test-race:
	$(GO) test -race -count=1 ./merge/ ./mmapio/

# The parsers' fuzz targets for a few seconds each, from their committed
# corpora (testdata/fuzz); `make fuzz` runs everything longer.
FUZZSHORT ?= 10s
fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZSHORT) ./mmapio/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZSHORT) ./config/

# staticcheck over every package and build (not part of make test).
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
lint:
	@command -v $(STATICCHECK) >/dev/null || { echo "$(STATICCHECK) missing: go install honnef.co/go/tools/cmd/staticcheck@latest"; exit 1; }
	$(STATICCHECK) ./...
	GOARCH=arm64 $(STATICCHECK) ./...
	$(STATICCHECK) -tags noasm ./...

vet:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bench/data/*')); \
		if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...
	$(GO) vet -tags noasm ./...

# Every kernel set this CPU has, forced in turn (TIESMM_KERNEL) through the
# end-to-end tests of the command; the engine's own tests draw sets at random.
test-amd64-levels:
	@for k in $$($(GO) run ./cmd/tiesmm cpu --sets); do \
		echo "== TIESMM_KERNEL=$$k"; TIESMM_KERNEL=$$k $(GO) test -short -count=1 ./cmd/tiesmm/ || exit 1; \
	done

# The generated assembly and declarations are what the generator writes today
# (one generator, every architecture, on any host).
asm-check:
	$(GO) generate ./kernels/ && git diff --exit-code -- kernels/

test-arm64:
	@command -v $(QEMU) >/dev/null || { echo "$(QEMU) missing: apt-get install -y qemu-user-static"; exit 1; }
	GOARCH=arm64 $(GO) test -count=1 -exec '$(QEMU) -cpu max' ./kernels/ ./select/
	GOARCH=arm64 $(GO) test -count=1 -exec '$(QEMU) -cpu cortex-a72' ./kernels/

FUZZTIME ?= 60s
KERNEL_FUZZ = FuzzWiden FuzzDeltaTrim FuzzFinish FuzzVote FuzzRange FuzzTies FuzzDeltaRange FuzzNorms FuzzDot FuzzTrimWords FuzzLowBits FuzzEMRElect

# Parsers, then every kernel against the Go reference (FUZZTIME each).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./mmapio/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/
	for f in $(KERNEL_FUZZ); do $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./kernels/ || exit 1; done

bench: build
	./bench/run.sh

clean:
	rm -rf bin $(DEMO)

bench-quick: build
	BENCH_QUICK=1 ./bench/run.sh

bench-methods: build
	./bench/methods.sh

bench-report:
	/usr/bin/python3 bench/report.py
